"""The Istio router against the sandbox's API server."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client as k8s

from canary.cluster import api_client
from canary.planner import phase_named, phases, rollback_routing, routing_for
from canary.routing import Router, RoutingMismatch
from canary.routing.istio import GROUP, VERSION, VIRTUAL_SERVICES, IstioRouter

ISTIO_PATHS = ("/virtualservices", "/destinationrules")


def router_for(box: Any, cls: type[IstioRouter] = IstioRouter) -> IstioRouter:
    return cls(api_client(box.kubeconfig), "default", "reviews", "reviews")


def istio_writes(box: Any) -> list[tuple[str, str, int]]:
    """(method, resource plural, status) of each write to Istio objects."""
    return [
        (w.method, w.path.split("/")[6], w.status)
        for w in box.writes()
        if any(p in w.path for p in ISTIO_PATHS)
    ]


def named_subsets(vs: dict[str, Any]) -> set[str]:
    return {
        d["destination"]["subset"]
        for route in vs.get("spec", {}).get("http", [])
        for d in route.get("route", [])
        if "subset" in d["destination"]
    }


def assert_no_route_ever_named_a_missing_subset(box: Any, since: int) -> int:
    """Replay the store's history: after every write, the VS's subsets exist in the DR."""
    vs: dict[str, Any] = {}
    dr: dict[str, Any] = {}
    checked = 0
    for event in box.store.events_after(since):
        if event.resource == "virtualservices":
            vs = event.object
        elif event.resource == "destinationrules":
            dr = event.object
        else:
            continue
        defined = {s["name"] for s in dr.get("spec", {}).get("subsets", [])}
        missing = named_subsets(vs) - defined
        assert not missing, f"at revision {event.revision} routes name missing {missing}"
        checked += 1
    return checked


def test_it_is_a_router(start_sandbox):
    assert isinstance(router_for(start_sandbox()), Router)


def test_no_routing_reads_as_none(start_sandbox):
    assert router_for(start_sandbox()).get_routes() is None


def test_every_phase_and_rollback_is_make_before_break(start_sandbox, fast_plan):
    box, plan = start_sandbox(), fast_plan()
    router = router_for(box)
    start = box.store.revision()
    for phase in phases(plan):
        router.set_routes(routing_for(plan, phase, "r1", router.get_routes()))
    router.set_routes(rollback_routing(plan, "r1", router.get_routes()))
    assert assert_no_route_ever_named_a_missing_subset(box, start) >= 10


def test_dropping_a_subset_writes_the_union_first_then_the_route_then_the_rule(
    start_sandbox, fast_plan
):
    box, plan = start_sandbox(), fast_plan()
    router = router_for(box)
    router.set_routes(routing_for(plan, phase_named(plan, "isolate"), "r1"))
    box.api.clear_requests()
    start = box.store.revision()

    router.set_routes(routing_for(plan, phase_named(plan, "cleanup"), "r1", router.get_routes()))

    assert istio_writes(box) == [
        ("PUT", "destinationrules", 200),
        ("PUT", "virtualservices", 200),
        ("PUT", "destinationrules", 200),
    ]
    union, _, final = [e.object for e in box.store.events_after(start)]
    assert [s["name"] for s in union["spec"]["subsets"]] == ["v2", "v1"]
    assert [s["name"] for s in final["spec"]["subsets"]] == ["v2"]


def test_creating_routing_writes_the_rule_before_the_route(start_sandbox, fast_plan):
    box, plan = start_sandbox(), fast_plan()
    box.api.clear_requests()

    router_for(box).set_routes(routing_for(plan, phase_named(plan, "isolate"), "r1"))

    assert istio_writes(box) == [
        ("POST", "destinationrules", 201),
        ("POST", "virtualservices", 201),
    ]


def test_routing_the_cluster_already_holds_is_not_written(start_sandbox, fast_plan):
    box, plan = start_sandbox(), fast_plan()
    router = router_for(box)
    desired = routing_for(plan, phase_named(plan, "step-1"), "r1")
    router.set_routes(desired)
    box.api.clear_requests()

    router.set_routes(routing_for(plan, phase_named(plan, "step-1"), "r1", router.get_routes()))

    assert box.writes() == []


def touch_virtual_service(box: Any, change: dict[str, Any]) -> None:
    """Someone else writes the VirtualService (a person, another controller, a webhook)."""
    custom = k8s.CustomObjectsApi(api_client(box.kubeconfig))
    custom.patch_namespaced_custom_object(
        GROUP, VERSION, "default", VIRTUAL_SERVICES, "reviews", change
    )


class MutatedAfterWrite(IstioRouter):
    """A VirtualService that is changed right after each write, as a webhook might."""

    box: Any

    def _apply(self, plural: str, desired: dict[str, Any]) -> None:
        super()._apply(plural, desired)
        if plural == VIRTUAL_SERVICES:
            touch_virtual_service(
                self.box,
                {
                    "spec": {
                        "http": [
                            {
                                "route": [{"destination": {"host": "reviews", "subset": "v1"}}],
                                "timeout": "5s",
                            }
                        ]
                    }
                },
            )


def test_a_read_back_that_differs_is_an_error(start_sandbox, fast_plan):
    box, plan = start_sandbox(), fast_plan()
    MutatedAfterWrite.box = box
    router = router_for(box, MutatedAfterWrite)

    with pytest.raises(RoutingMismatch, match="VirtualService reviews"):
        router.set_routes(routing_for(plan, phase_named(plan, "isolate"), "r1"))


class RacedOnce(IstioRouter):
    """Someone else updates the VirtualService between our read and our write, once."""

    box: Any
    races = 1
    _armed = False

    def _apply(self, plural: str, desired: dict[str, Any]) -> None:
        self._armed = plural == VIRTUAL_SERVICES
        super()._apply(plural, desired)

    def _read(self, plural: str, name: str) -> dict[str, Any] | None:
        current = super()._read(plural, name)
        if self._armed and self.races and current is not None:
            self._armed, self.races = False, self.races - 1
            touch_virtual_service(self.box, {"metadata": {"labels": {"touched": "yes"}}})
        return current


def test_a_conflict_is_read_again_and_retried(start_sandbox, fast_plan):
    box, plan = start_sandbox(), fast_plan()
    RacedOnce.box = box
    router = router_for(box, RacedOnce)
    router.set_routes(routing_for(plan, phase_named(plan, "isolate"), "r1"))
    box.api.clear_requests()
    desired = routing_for(plan, phase_named(plan, "step-1"), "r1", router.get_routes())

    router.set_routes(desired)

    vs_writes = [(m, s) for m, kind, s in istio_writes(box) if kind == "virtualservices"]
    assert vs_writes == [("PATCH", 200), ("PUT", 409), ("PUT", 200)]
    router.verify(desired)
