"""The Gateway API on the real server: the BookInfo release of configs/
bookinfo-reviews-gateway-api.yaml promoted with the release's rights (both Roles of
release-rbac.yaml), the mesh routing by the HTTPRoute; and every HTTPRoute the planner
writes accepted by the real server's validation of the Gateway API's CRD (schema and CEL
rules), a malformed one refused."""

from __future__ import annotations

import copy
import uuid
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from canary.cluster import created_by
from canary.lease import LEASE, OUTCOME, annotations_of
from canary.plan import load_plan, plan_from_dict
from canary.planner import HttpRouteRouting, phases, rollback_routing, same_routing
from canary.release import ReleaseTarget
from flows.canary_release import canary_release
from tests.real_cluster.conftest import (
    CANARY,
    REPO,
    REVIEWS_STABLE,
    RealCluster,
    deployment_available,
    gone,
    real_plan_data,
)
from tests.real_cluster.routes import (
    GATEWAY_API,
    ISTIO,
    ObjectHistory,
    phases_seen,
    planned_states,
    route_objects,
    unplanned,
)
from tests.real_cluster.test_validation import dry_run_create, plan_output

pytestmark = pytest.mark.timeout(600)

PLAN_FILE = REPO / "configs" / "bookinfo-reviews-gateway-api.yaml"
STEPS = [{"weight": 10, "hold": "4s"}, {"weight": 50, "hold": "4s"}]


def backends(http_route: dict[str, Any]) -> list[list[tuple[str, int]]]:
    """Per rule, (Service, weight) of each backend."""
    rules = http_route["spec"]["rules"]
    return [[(b["name"], b["weight"]) for b in rule["backendRefs"]] for rule in rules]


@pytest.mark.usefixtures("prefect_api_url", "gateway_api_rights")
def test_a_gateway_api_release_is_promoted_on_the_real_server(
    real_cluster: RealCluster, admin_api: Any, fresh_reviews: str, mesh_on_cluster: Any
):
    running = mesh_on_cluster("healthy")
    assert "httproutes" in running.mesh.watching  # the mesh routes by the server's HTTPRoutes
    data = real_plan_data(PLAN_FILE, steps=STEPS, analysis=running.analysis())
    plan, release_id = plan_from_dict(data), "rc-gateway-api"
    target = ReleaseTarget(
        kubeconfig=str(real_cluster.release_kubeconfig), mesh_url=running.mesh.ingress_url
    )
    with ObjectHistory(admin_api, fresh_reviews, *GATEWAY_API, "httproutes") as history:
        result = canary_release(plan, target, release_id)
        assert result.outcome == "promoted", result.reason
        stored = history.caught_up(plan.http_route)

    states = planned_states(plan, release_id)
    assert phases_seen(stored) == [phase.name for phase in phases(plan)]
    assert unplanned(stored, route_objects(plan, states), release_id) == []
    weights = [states[name].canary_weight(plan) for name in phases_seen(stored)]
    assert weights == sorted(weights) and 10 in weights and 50 in weights

    custom = k8s.CustomObjectsApi(admin_api)
    held = custom.get_namespaced_custom_object(
        *GATEWAY_API, fresh_reviews, "httproutes", plan.http_route
    )
    assert same_routing(states["cleanup"].route, held)
    assert backends(held) == [[("reviews-v2", 100)]]
    assert HttpRouteRouting(held).managed_route_names() == []
    notes = annotations_of(held)
    assert LEASE not in notes and notes[OUTCOME] == "promoted"

    core, apps = k8s.CoreV1Api(admin_api), k8s.AppsV1Api(admin_api)
    # reviews-v1's Service was made by this release and is retired with it; reviews-v2's
    # carries the traffic; the application's own Service stays.
    assert gone(lambda: core.read_namespaced_service("reviews-v1", fresh_reviews))
    canary_service = admin_api.sanitize_for_serialization(
        core.read_namespaced_service("reviews-v2", fresh_reviews)
    )
    assert created_by(canary_service) == release_id
    assert core.read_namespaced_service("reviews", fresh_reviews).metadata.name == "reviews"
    assert gone(lambda: apps.read_namespaced_deployment(REVIEWS_STABLE, fresh_reviews))
    assert deployment_available(apps, fresh_reviews, CANARY)
    assert gone(
        lambda: custom.get_namespaced_custom_object(
            *ISTIO, fresh_reviews, "virtualservices", "reviews"
        )
    )
    running.wait_until_all_on(CANARY)


# --- validation -------------------------------------------------------------------------


def planned_phases() -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(plan_output(PLAN_FILE)) if doc]


def planned_http_routes() -> list[tuple[str, dict[str, Any]]]:
    """(label, HTTPRoute) for every phase, and the rollback state from the phase with the
    most rules the pipeline added."""
    documents = planned_phases()
    routes = [(f"{doc['phase']} HTTPRoute", doc["httpRoute"]) for doc in documents]
    busiest = max(documents, key=lambda doc: len(doc["httpRoute"]["spec"]["rules"]))
    current = HttpRouteRouting(busiest["httpRoute"], tuple(busiest["services"]))
    rolled_back = rollback_routing(load_plan(PLAN_FILE), "dry-run", current)
    routes.append((f"rollback from {busiest['phase']} HTTPRoute", rolled_back.route))
    return routes


def test_the_real_server_accepts_every_http_route_the_planner_writes(release_api: Any):
    labels = [label for label, _ in planned_http_routes()]
    assert {"isolate", "test", "header-route", "step-1", "step-2", "promote", "cleanup"} <= {
        label.split(" ")[0] for label in labels
    }
    refused, changed = [], []
    for label, route in planned_http_routes():
        try:
            accepted = dry_run_create(release_api, route)
        except ApiException as answer:
            refused.append(f"{label}: {answer.status} {answer.body}")
            continue
        # Accepted as written: nothing pruned or defaulted on the way in.
        if accepted["spec"] != route["spec"]:
            changed.append(f"{label}: {accepted['spec']}")
    assert not refused, refused
    assert not changed, changed


def test_the_real_server_accepts_the_version_services_the_planner_writes(release_api: Any):
    core = k8s.CoreV1Api(release_api)
    services = {s["metadata"]["name"]: s for doc in planned_phases() for s in doc["services"]}
    assert sorted(services) == ["reviews-v1", "reviews-v2"]
    for service in services.values():
        service = copy.deepcopy(service)  # under a fresh name: a release may hold the planned one
        service["metadata"]["name"] = f"validate-{uuid.uuid4().hex[:8]}"
        accepted = core.create_namespaced_service(
            service["metadata"]["namespace"], service, dry_run="All", field_validation="Strict"
        )
        assert accepted.spec.selector == service["spec"]["selector"]


def a_split_route() -> dict[str, Any]:
    """The first phase's HTTPRoute that splits between two backends."""
    route = next(
        route
        for _, route in planned_http_routes()
        if any(len(rule["backendRefs"]) == 2 for rule in route["spec"]["rules"])
    )
    return copy.deepcopy(route)


def refusal(api: Any, route: dict[str, Any]) -> ApiException:
    with pytest.raises(ApiException) as refused:
        dry_run_create(api, route)
    return refused.value


def test_a_relative_path_is_refused_by_a_cel_rule(release_api: Any):
    route = a_split_route()
    route["spec"]["rules"][-1]["matches"][0]["path"]["value"] = "reviews"
    answer = refusal(release_api, route)
    assert answer.status == 422
    assert "value must be an absolute path and start with '/'" in answer.body


def test_a_service_backend_without_a_port_is_refused_by_a_cel_rule(release_api: Any):
    route = a_split_route()
    del route["spec"]["rules"][-1]["backendRefs"][0]["port"]
    answer = refusal(release_api, route)
    assert answer.status == 422
    assert "Must have port for Service reference" in answer.body


def test_a_negative_weight_is_refused_by_the_schema(release_api: Any):
    route = a_split_route()
    route["spec"]["rules"][-1]["backendRefs"][0]["weight"] = -10
    answer = refusal(release_api, route)
    assert answer.status == 422
    assert "weight" in answer.body and "should be greater than or equal to 0" in answer.body
