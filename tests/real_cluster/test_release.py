"""The BookInfo release of reviews on the real server, with the release's own rights
(release.kubeconfig), the sandbox's mesh routing by what the server holds and a real
Prometheus judging the canary: promoted when healthy, rolled back when faulty. Every
VirtualService and DestinationRule the server stored on the way is one of the planner's."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client as k8s

from canary.plan import ReleasePlan, plan_from_dict
from canary.planner import (
    ROLLED_BACK_PHASE,
    canary_weight,
    managed_route_names,
    phases,
    same_routing,
)
from canary.release import ReleaseTarget
from flows.canary_release import ReleaseRolledBack, canary_release
from tests.real_cluster.conftest import (
    CANARY,
    REPO,
    REVIEWS_STABLE,
    MeshWithMetrics,
    RealCluster,
    deployment_available,
    gone,
    real_plan_data,
)
from tests.real_cluster.routes import (
    ISTIO,
    ObjectHistory,
    phases_seen,
    planned_states,
    route_objects,
    unplanned,
    unplanned_destination_rules,
)

pytestmark = [pytest.mark.timeout(600), pytest.mark.usefixtures("prefect_api_url")]

PLAN_FILE = REPO / "configs" / "bookinfo-reviews.yaml"
STEPS = [{"weight": 20, "hold": "6s"}]  # room for two failed checks of the metrics


def plan_on(running: MeshWithMetrics, **overrides: Any) -> ReleasePlan:
    data = real_plan_data(PLAN_FILE, steps=STEPS, analysis=running.analysis(), **overrides)
    return plan_from_dict(data)


def target_of(real_cluster: RealCluster, running: MeshWithMetrics) -> ReleaseTarget:
    return ReleaseTarget(
        kubeconfig=str(real_cluster.release_kubeconfig), mesh_url=running.mesh.ingress_url
    )


def destinations(virtual_service: dict[str, Any]) -> list[list[tuple[str, int | None]]]:
    """Per http route, (subset, weight) of each destination."""
    return [
        [(d["destination"].get("subset"), d.get("weight")) for d in route["route"]]
        for route in virtual_service["spec"]["http"]
    ]


def test_a_healthy_canary_is_promoted_and_every_phase_is_the_planners(
    real_cluster: RealCluster, admin_api: Any, fresh_reviews: str, mesh_on_cluster: Any
):
    running = mesh_on_cluster("healthy")
    plan, release_id = plan_on(running), "rc-promote"
    with (
        ObjectHistory(admin_api, fresh_reviews, *ISTIO, "virtualservices") as vs_history,
        ObjectHistory(admin_api, fresh_reviews, *ISTIO, "destinationrules") as dr_history,
    ):
        result = canary_release(plan, target_of(real_cluster, running), release_id)
        assert result.outcome == "promoted", result.reason
        stored_vs = vs_history.caught_up(plan.virtual_service)
        stored_dr = dr_history.caught_up(plan.destination_rule)

    states = planned_states(plan, release_id)
    assert phases_seen(stored_vs) == [phase.name for phase in phases(plan)]
    assert unplanned(stored_vs, route_objects(plan, states), release_id) == []
    assert unplanned_destination_rules(stored_dr, states, release_id) == []

    custom = k8s.CustomObjectsApi(admin_api)
    held = custom.get_namespaced_custom_object(
        *ISTIO, fresh_reviews, "virtualservices", plan.virtual_service
    )
    assert same_routing(states["cleanup"].virtual_service, held)
    assert canary_weight(plan, held) == 100
    assert destinations(held) == [[("v2", None)]]
    apps = k8s.AppsV1Api(admin_api)
    assert gone(lambda: apps.read_namespaced_deployment(REVIEWS_STABLE, fresh_reviews))
    assert deployment_available(apps, fresh_reviews, CANARY)
    running.wait_until_all_on(CANARY)


def test_a_faulty_canary_is_rolled_back_to_all_stable(
    real_cluster: RealCluster, admin_api: Any, fresh_reviews: str, mesh_on_cluster: Any
):
    running = mesh_on_cluster("faulty")
    # No checks in the test phase: the canary is caught by its metrics, in Prometheus.
    plan, release_id = plan_on(running, tests={"port": 9080}), "rc-rollback"
    with (
        ObjectHistory(admin_api, fresh_reviews, *ISTIO, "virtualservices") as vs_history,
        ObjectHistory(admin_api, fresh_reviews, *ISTIO, "destinationrules") as dr_history,
    ):
        with pytest.raises(ReleaseRolledBack) as raised:
            canary_release(plan, target_of(real_cluster, running), release_id)
        stored_vs = vs_history.caught_up(plan.virtual_service)
        stored_dr = dr_history.caught_up(plan.destination_rule)

    result = raised.value.result
    assert result.failed_phase == "step-1", result.reason
    assert result.reason.startswith("step-1: request-success-rate "), result.reason
    states = planned_states(plan, release_id, rolled_back_after="step-1")
    assert phases_seen(stored_vs) == list(states)  # isolate ... step-1, rolled-back
    assert list(states)[-1] == ROLLED_BACK_PHASE
    assert unplanned(stored_vs, route_objects(plan, states), release_id) == []
    assert unplanned_destination_rules(stored_dr, states, release_id) == []

    held = k8s.CustomObjectsApi(admin_api).get_namespaced_custom_object(
        *ISTIO, fresh_reviews, "virtualservices", plan.virtual_service
    )
    assert same_routing(states[ROLLED_BACK_PHASE].virtual_service, held)
    assert destinations(held) == [[("v1", None)]]  # 100 % stable
    assert canary_weight(plan, held) == 0
    assert managed_route_names(held) == []
    apps = k8s.AppsV1Api(admin_api)
    assert gone(lambda: apps.read_namespaced_deployment(CANARY, fresh_reviews))
    assert deployment_available(apps, fresh_reviews, REVIEWS_STABLE)
    running.wait_until_all_on(REVIEWS_STABLE)
