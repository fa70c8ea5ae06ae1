"""The Gateway API router on fixtures, without a server: the official client against an
in-memory API (tests/support/fake_kube.py) that validates HTTPRoutes with the CRD's schema
and stores them with its defaults, as an API server with the CRD installed would."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from canary.lease import LEASE, RouteLease, annotations_of
from canary.planner import HttpRouteRouting, phase_named, phases, rollback_routing, routing_for
from canary.resume import unfinished
from canary.routing import Router, RoutingMismatch
from canary.routing.custom_objects import RouteApiMissing
from canary.routing.factory import router_for
from canary.routing.gateway_api import HTTP_ROUTES, GatewayApiRouter
from canary.routing.istio import IstioRouter
from tests.support.fake_kube import FakeKube

GATEWAY_API = {"provider": "gateway-api", "port": 9080}
VERSION_SERVICES = ("reviews-v1", "reviews-v2")


def service(name: str, version: str | None = None, **annotations: str) -> dict[str, Any]:
    selector = {"app": "reviews", **({"version": version} if version else {})}
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": "default", "annotations": annotations},
        "spec": {"selector": selector, "ports": [{"name": "http", "port": 9080}]},
    }


@pytest.fixture
def kube() -> FakeKube:
    """BookInfo's reviews Service, nothing else."""
    fake = FakeKube()
    fake.put("services", service("reviews"))
    return fake


@pytest.fixture
def plan(fast_plan: Any) -> Any:
    return fast_plan(routing=GATEWAY_API)


def router_of(kube: FakeKube, plan: Any, cls: type[GatewayApiRouter] = GatewayApiRouter) -> Any:
    return cls(kube.api_client(), plan)


def writes(kube: FakeKube) -> list[tuple[str, str, str, int]]:
    """(method, resource, name, status) of each write; a create is named by its collection."""
    out = []
    for request in kube.writes():
        parts = request.path.split("/")
        plural, name = (parts[-1], "") if parts[-1] in ("services", HTTP_ROUTES) else parts[-2:]
        out.append((request.method, plural, name, request.status))
    return out


def assert_no_rule_ever_named_a_missing_service(kube: FakeKube, since: int = 0) -> int:
    """Replay the writes: after each, every Service a rule names exists."""
    route: dict[str, Any] = {}
    services = {
        e.name for e in kube.events[:since] if e.plural == "services" and e.object is not None
    }
    checked = 0
    for event in kube.events[since:]:
        if event.plural == HTTP_ROUTES:
            route = event.object or {}
        elif event.plural == "services":
            (services.add if event.object is not None else services.discard)(event.name)
        named = {
            b["name"] for r in route.get("spec", {}).get("rules", []) for b in r["backendRefs"]
        }
        assert named <= services, f"after {event.method} {event.name}: {named - services} missing"
        checked += 1
    return checked


def run_phases(router: Any, plan: Any, release_id: str = "r1") -> None:
    for phase in phases(plan):
        router.set_routes(routing_for(plan, phase, release_id, router.get_routes()))


# --- the interface and the factory --------------------------------------------------------


def test_the_factory_picks_the_router_of_the_plans_traffic_api(kube, fast_plan, plan):
    api = kube.api_client()
    istio = router_for(fast_plan(), api)
    gateway = router_for(plan, api)
    assert isinstance(istio, IstioRouter) and isinstance(gateway, GatewayApiRouter)
    assert all(isinstance(r, Router) for r in (istio, gateway))
    assert istio.route_object().describe() == "VirtualService default/reviews"
    assert gateway.route_object().describe() == "HTTPRoute default/reviews"
    assert gateway.route_object().api_version == "gateway.networking.k8s.io/v1"


def test_no_routing_reads_as_none(kube, plan):
    assert router_of(kube, plan).get_routes() is None


# --- make-before-break ---------------------------------------------------------------------


def test_every_phase_and_rollback_is_make_before_break(kube, plan):
    router = router_of(kube, plan)
    start = len(kube.events)
    run_phases(router, plan)
    router.set_routes(rollback_routing(plan, "r1", router.get_routes()))
    assert assert_no_rule_ever_named_a_missing_service(kube, start) >= 10
    assert kube.get("services", "reviews-v1") is not None  # brought back for the rollback
    assert kube.get("services", "reviews-v2") is None


def test_creating_routing_creates_the_services_before_the_route(kube, plan):
    router_of(kube, plan).set_routes(routing_for(plan, phase_named(plan, "isolate"), "r1"))

    assert writes(kube) == [
        ("POST", "services", "", 201),
        ("POST", "services", "", 201),
        ("POST", HTTP_ROUTES, "", 201),
    ]
    for name in VERSION_SERVICES:
        created = kube.get("services", name)
        assert created["metadata"]["annotations"] == {"canary.release/release-id": "r1"}
        assert created["spec"]["selector"] == {"app": "reviews", "version": name[-2:]}


def test_cleanup_moves_the_route_first_then_deletes_the_stable_service_it_created(kube, plan):
    router = router_of(kube, plan)
    router.set_routes(routing_for(plan, phase_named(plan, "promote"), "r1"))
    kube.clear_requests()

    router.set_routes(routing_for(plan, phase_named(plan, "cleanup"), "r1", router.get_routes()))

    assert writes(kube) == [
        ("PUT", HTTP_ROUTES, "reviews", 200),
        ("DELETE", "services", "reviews-v1", 200),
    ]
    assert kube.get("services", "reviews-v2") is not None


def test_rollback_moves_the_route_first_then_deletes_the_canary_service_it_created(kube, plan):
    router = router_of(kube, plan)
    router.set_routes(routing_for(plan, phase_named(plan, "step-1"), "r1"))
    kube.clear_requests()

    router.set_routes(rollback_routing(plan, "r1", router.get_routes()))

    assert writes(kube) == [
        ("PUT", HTTP_ROUTES, "reviews", 200),
        ("DELETE", "services", "reviews-v2", 200),
    ]


def test_a_service_the_release_did_not_create_is_never_deleted(kube, plan):
    kube.put("services", service("reviews-v1", "v1"))  # the user's
    kube.put("services", service("reviews-v2", "v2", **{"canary.release/release-id": "older"}))
    router = router_of(kube, plan)

    run_phases(router, plan)
    router.set_routes(rollback_routing(plan, "r1", router.get_routes()))

    assert [w for w in writes(kube) if w[1] == "services"] == []
    assert kube.get("services", "reviews-v1")["metadata"]["annotations"] == {}
    assert kube.get("services", "reviews-v2") is not None


def test_user_rules_are_kept(kube, plan):
    user_rule = {
        "name": "admin",
        "matches": [{"path": {"type": "PathPrefix", "value": "/admin"}}],
        "filters": [
            {
                "type": "RequestHeaderModifier",
                "requestHeaderModifier": {"add": [{"name": "x-admin", "value": "1"}]},
            }
        ],
        "backendRefs": [
            {"group": "", "kind": "Service", "name": "ratings", "port": 9080, "weight": 1}
        ],
    }
    kube.put("services", service("ratings"))
    route = routing_for(plan, phase_named(plan, "isolate"), "setup").http_route
    route["spec"]["rules"].append(user_rule)
    kube.put(HTTP_ROUTES, route)
    router = router_of(kube, plan)

    for phase in phases(plan):
        router.set_routes(routing_for(plan, phase, "r1", router.get_routes()))
        rules = kube.get(HTTP_ROUTES, "reviews")["spec"]["rules"]
        assert [r for r in rules if r.get("name") == "admin"] == [user_rule]
        assert HttpRouteRouting(kube.get(HTTP_ROUTES, "reviews")).canary_weight(plan) == (
            phase.canary_weight
        )


def test_routing_the_cluster_already_holds_is_not_written(kube, plan):
    router = router_of(kube, plan)
    router.set_routes(routing_for(plan, phase_named(plan, "step-1"), "r1"))
    kube.clear_requests()

    router.set_routes(routing_for(plan, phase_named(plan, "step-1"), "r1", router.get_routes()))
    router.verify(routing_for(plan, phase_named(plan, "step-1"), "r1", router.get_routes()))

    assert kube.writes() == []


# --- read back ------------------------------------------------------------------------------


def test_a_route_changed_after_the_write_is_a_mismatch(kube, plan):
    def webhook(method: str, plural: str, name: str) -> None:
        if plural == HTTP_ROUTES:
            route = kube.get(HTTP_ROUTES, name)
            route["spec"]["rules"][-1]["timeouts"] = {"request": "5s"}
            kube.put(HTTP_ROUTES, route)

    kube.after_write = webhook
    with pytest.raises(RoutingMismatch, match="HTTPRoute reviews read back different"):
        router_of(kube, plan).set_routes(routing_for(plan, phase_named(plan, "isolate"), "r1"))


def test_a_service_gone_after_the_write_is_a_mismatch(kube, plan):
    def someone_deletes_the_canary_service(method: str, plural: str, name: str) -> None:
        if plural == HTTP_ROUTES:
            kube.handle("DELETE", "/api/v1/namespaces/default/services/reviews-v2", None)

    kube.after_write = someone_deletes_the_canary_service
    with pytest.raises(RoutingMismatch, match="Service reviews-v2 is missing"):
        router_of(kube, plan).set_routes(routing_for(plan, phase_named(plan, "isolate"), "r1"))


def test_a_service_still_named_by_a_rule_is_not_deleted(kube, plan):
    """Someone points a rule at the stable Service while cleanup writes: it stays."""
    router = router_of(kube, plan)
    router.set_routes(routing_for(plan, phase_named(plan, "promote"), "r1"))

    def someone_routes_to_stable(method: str, plural: str, name: str) -> None:
        if plural == HTTP_ROUTES and method == "PUT":
            kube.after_write = None
            route = kube.get(HTTP_ROUTES, name)
            route["spec"]["rules"][-1]["backendRefs"][0]["name"] = "reviews-v1"
            kube.put(HTTP_ROUTES, route)

    kube.after_write = someone_routes_to_stable
    with pytest.raises(RoutingMismatch, match="HTTPRoute reviews read back different"):
        router.set_routes(
            routing_for(plan, phase_named(plan, "cleanup"), "r1", router.get_routes())
        )
    assert kube.get("services", "reviews-v1") is not None


class RacedOnce(GatewayApiRouter):
    """Someone else updates the HTTPRoute between our read and our write, once."""

    kube: FakeKube
    races = 1
    _armed = False

    def _apply(self, plural: str, desired: dict[str, Any]) -> None:
        self._armed = True
        super()._apply(plural, desired)

    def _read(self, plural: str, name: str) -> dict[str, Any] | None:
        current = super()._read(plural, name)
        if self._armed and self.races and current is not None:
            self._armed, self.races = False, self.races - 1
            touched = copy.deepcopy(current)
            touched["metadata"].setdefault("labels", {})["touched"] = "yes"
            self.kube.put(HTTP_ROUTES, touched)
        return current


def test_a_conflict_is_read_again_and_retried(kube, plan):
    router = router_of(kube, plan)
    router.set_routes(routing_for(plan, phase_named(plan, "isolate"), "r1"))
    RacedOnce.kube = kube
    raced = router_of(kube, plan, RacedOnce)
    desired = routing_for(plan, phase_named(plan, "step-1"), "r1", router.get_routes())
    kube.clear_requests()

    raced.set_routes(desired)

    assert [(m, s) for m, kind, _, s in writes(kube) if kind == HTTP_ROUTES] == [
        ("PUT", 409),
        ("PUT", 200),
    ]
    raced.verify(desired)


# --- the lease and the resume point live on the HTTPRoute ------------------------------------


def test_the_lease_and_the_phase_reached_are_on_the_http_route(kube, plan):
    lease = RouteLease(kube.api_client(), plan, ttl=30)
    lease.acquire("r1", "run-a")
    created = kube.get(HTTP_ROUTES, "reviews")
    assert annotations_of(created)[LEASE] == "r1"
    assert created["spec"]["rules"][0]["backendRefs"][0]["name"] == "reviews"  # as unrouted

    router = router_of(kube, plan)
    router.set_routes(routing_for(plan, phase_named(plan, "step-1"), "r1", router.get_routes()))
    found = unfinished(plan, lease.read())
    assert (found.release_id, found.phase) == ("r1", "step-1")
    assert annotations_of(kube.get(HTTP_ROUTES, "reviews"))[LEASE] == "r1"  # kept by writes

    lease.release("r1", "run-a", "rolled-back")
    assert LEASE not in annotations_of(kube.get(HTTP_ROUTES, "reviews"))
    assert kube.get("virtualservices", "reviews") is None


def test_an_api_server_without_the_httproute_crd_is_one_clear_line(plan):
    kube = FakeKube(served=("services", "deployments"))
    expected = "does not serve httproutes.gateway.networking.k8s.io/v1: install its CRD"

    with pytest.raises(RouteApiMissing, match=expected):
        RouteLease(kube.api_client(), plan, ttl=30).acquire("r1", "run-a")
    with pytest.raises(RouteApiMissing, match=expected):
        router_of(kube, plan).set_routes(routing_for(plan, phase_named(plan, "isolate"), "r1"))
