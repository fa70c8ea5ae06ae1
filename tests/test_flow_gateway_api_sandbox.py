"""The canary-release flow on the Gateway API, end to end on the emulated sandbox.

The sandbox's API server serves the HTTPRoutes the release writes, and its mesh routes the
simulated traffic by them. After every phase, while that phase's routing holds, traffic is
sent through the traffic simulator and the versions that served it are counted from the
Istio metrics the sandbox exports; the shares must be those the HTTPRoute, as the API server
holds it, gives (its weighted rule for plain requests, its header rule for user jason's).

The release does not wait for its notifiers, so the plan has a gate wherever a gate may
stand (before the header route, each step, promote and cleanup): the release waits there,
its routing held, while the traffic is counted, and then the meter approves, as a person
would. isolate and deploy have no gate after them; they are measured as they end, and the
split must be the same by the route read before and after the counting.
"""

from __future__ import annotations

import copy
import math
import threading
import urllib.request
from dataclasses import dataclass
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from canary.approvals.decisions import auto_approve
from canary.cluster import created_by, is_ready
from canary.events import EventKind, ReleaseEvent
from canary.notify import notifying
from flows.canary_release import ReleaseRolledBack, canary_release
from tests.support.gateway_releases import GATEWAY_API

pytestmark = pytest.mark.usefixtures("prefect_api_url")

REQUESTS_PER_PHASE = 4000
JASON = ("end-user", "jason")
SIMULATED_CALLER = "productpage-v1"
# How far a measured share may stray from the expected one: this many standard deviations
# of a binomial share over the requests counted.
SIGMAS = 5.0
GATED = ("header-route", "step-1", "promote", "cleanup")
UNGATED = ("isolate", "deploy")  # no gate may follow them: measured as they end
GATE_TIMEOUT_S = 300


@dataclass
class Measurement:
    route: dict[str, Any]  # the HTTPRoute the API server held as the traffic was sent
    route_after: dict[str, Any]  # and once it was counted
    served: dict[str, float]  # requests per destination workload

    @property
    def total(self) -> float:
        return sum(self.served.values())

    def share(self, workload: str) -> float:
        return self.served.get(workload, 0.0) / self.total


def served_by(metrics_url: str) -> dict[str, float]:
    """istio_requests_total of the simulated caller's requests, per destination workload."""
    with urllib.request.urlopen(metrics_url, timeout=10) as answer:
        text = answer.read().decode()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if (
                sample.name == "istio_requests_total"
                and labels.get("reporter") == "source"
                and labels.get("source_workload") == SIMULATED_CALLER
            ):
                workload = labels.get("destination_workload", "unknown")
                out[workload] = out.get(workload, 0.0) + sample.value
    return out


class SplitMeter:
    """A notifier that measures the split of the routing each phase leaves in place.

    Measured: as isolate and deploy end, and at each gate (the routing of the phase before
    it), which it then approves.
    """

    def __init__(self, box: Any) -> None:
        self.box = box
        self.by_phase: dict[str, Measurement] = {}
        self._lock = threading.Lock()

    def notify(self, event: ReleaseEvent) -> None:
        if event.kind == EventKind.PHASE_FINISHED and event.phase in UNGATED:
            self.measure(event.phase)
        elif event.kind == EventKind.APPROVAL_REQUESTED and event.phase in GATED:
            self.measure(f"before {event.phase}")
            # The release id is the flow run's: these releases are not given one.
            gate = event.gate or event.phase
            auto_approve(event.identity.release_id, gate, who="meter", timeout=GATE_TIMEOUT_S)

    def measure(self, label: str) -> Measurement:
        with self._lock:
            route = copy.deepcopy(self.box.get("httproutes", "reviews"))
            before = served_by(self.box.sandbox.metrics_url)
            self.box.sandbox.simulator.send(REQUESTS_PER_PHASE)
            after = served_by(self.box.sandbox.metrics_url)
            route_after = copy.deepcopy(self.box.get("httproutes", "reviews"))
            served = {
                w: after[w] - before.get(w, 0.0) for w in after if after[w] > before.get(w, 0)
            }
            self.by_phase[label] = Measurement(route, route_after, served)
            return self.by_phase[label]


# --- what the HTTPRoute says ---------------------------------------------------------------


def _backend_share(rule: dict[str, Any], service: str) -> float:
    refs = rule.get("backendRefs") or []
    total = sum(r.get("weight", 1) for r in refs)
    return sum(r.get("weight", 1) for r in refs if r["name"] == service) / total


def _headers_of(match: dict[str, Any]) -> set[tuple[str, str]]:
    return {(h["name"].lower(), h["value"]) for h in match.get("headers") or []}


def expected_share(route: dict[str, Any], service: str, jason_share: float) -> float:
    """The share of the simulated traffic the HTTPRoute sends to `service`.

    Plain requests carry no header, so they take the rule whose matches ask for none;
    jason's take a rule that asks for his header (a header match is more specific), else
    the plain rule.
    """
    rules = route["spec"]["rules"]
    plain = next(r for r in rules if any(not _headers_of(m) for m in r["matches"]))
    for_jason = next(
        (r for r in rules if any(_headers_of(m) == {JASON} for m in r["matches"])), plain
    )
    return (1 - jason_share) * _backend_share(plain, service) + jason_share * _backend_share(
        for_jason, service
    )


def assert_split_follows_the_route(measurement: Measurement, jason_share: float, label: str):
    want = expected_share(measurement.route, "reviews-v2", jason_share)
    held = expected_share(measurement.route_after, "reviews-v2", jason_share)
    assert held == want, f"{label}: the split changed while traffic was counted"
    assert measurement.total >= REQUESTS_PER_PHASE, label
    assert set(measurement.served) <= {"reviews-v1", "reviews-v2"}, (label, measurement.served)
    got = measurement.share("reviews-v2")
    if want in (0.0, 1.0):
        assert got == want, f"{label}: v2 served {got:.4f}, the route says {want}"
        return
    tolerance = SIGMAS * math.sqrt(want * (1 - want) / measurement.total)
    assert abs(got - want) <= tolerance, (
        f"{label}: v2 served {got:.4f} of {measurement.total:.0f} requests, the route says "
        f"{want:.4f} (tolerance {tolerance:.4f})"
    )


def gateway_plan_on_the_mesh(fast_plan: Any) -> Any:
    """The fast BookInfo plan on the Gateway API, its checks sent through the mesh, with a
    gate wherever one may stand."""
    gates = [
        {"before": phase, "approvers": {"users": ["U0METER"]}, "timeout": f"{GATE_TIMEOUT_S}s"}
        for phase in GATED
    ]
    return fast_plan(routing=GATEWAY_API, gates=gates)


# --- releases --------------------------------------------------------------------------------


def test_a_gateway_api_release_on_the_sandbox_is_promoted_and_traffic_follows_each_phase(
    start_sandbox, fast_plan
):
    box, plan = start_sandbox("healthy"), gateway_plan_on_the_mesh(fast_plan)
    meter = SplitMeter(box)
    jason = box.sandbox.simulator.jason_share

    with notifying(meter):
        result = canary_release(plan, target=box.target)

    assert result.outcome == "promoted", result.reason
    phases = ["isolate", "deploy", "test", "header-route", "step-1", "promote", "cleanup"]
    assert [p.name for p in result.phases] == phases
    # Each phase's routing, measured after it: at the gate before the next phase.
    assert list(meter.by_phase) == [*UNGATED, *(f"before {p}" for p in GATED)]
    for phase, measurement in meter.by_phase.items():
        assert_split_follows_the_route(measurement, jason, phase)
    # The shares the phases were planned to give, as the counters saw them.
    v2 = {phase: m.share("reviews-v2") for phase, m in meter.by_phase.items()}
    assert v2["isolate"] == v2["deploy"] == v2["before header-route"] == 0.0  # ... test
    assert 0 < v2["before step-1"] < 0.2  # header-route: only jason (a tenth) on v2
    assert 0.1 < v2["before promote"] < 0.4  # step-1: 20 % of the others, and jason
    assert v2["before cleanup"] == 1.0  # promote

    final = meter.measure("after")
    assert_split_follows_the_route(final, jason, "after")
    assert final.share("reviews-v2") == 1.0
    route = box.get("httproutes", "reviews")
    assert [[b["name"] for b in r["backendRefs"]] for r in route["spec"]["rules"]] == [
        ["reviews-v2"]
    ]
    assert box.get("services", "reviews-v1") is None  # made by the release, retired
    assert created_by(box.get("services", "reviews-v2")) == result.identity.release_id
    assert box.get("deployments", "reviews-v1") is None
    assert is_ready(box.get("deployments", "reviews-v2"))
    assert box.get("virtualservices", "reviews") is None


def test_a_faulty_canary_on_the_gateway_api_is_rolled_back_to_all_on_stable(
    start_sandbox, fast_plan
):
    box, plan = start_sandbox("faulty"), gateway_plan_on_the_mesh(fast_plan)
    meter = SplitMeter(box)
    jason = box.sandbox.simulator.jason_share

    with notifying(meter), pytest.raises(ReleaseRolledBack) as raised:
        canary_release(plan, target=box.target)

    result = raised.value.result
    assert (result.outcome, result.failed_phase) == ("rolled-back", "test")
    assert "status 5" in result.reason  # the canary's errors, seen through the mesh
    assert list(meter.by_phase) == ["isolate", "deploy"]
    for phase, measurement in meter.by_phase.items():
        assert_split_follows_the_route(measurement, jason, phase)
        assert measurement.share("reviews-v1") == 1.0

    final = meter.measure("after rollback")
    assert_split_follows_the_route(final, jason, "after rollback")
    assert final.share("reviews-v1") == 1.0
    route = box.get("httproutes", "reviews")
    assert [[b["name"] for b in r["backendRefs"]] for r in route["spec"]["rules"]] == [
        ["reviews-v1"]
    ]
    assert box.get("services", "reviews-v2") is None
    assert box.get("deployments", "reviews-v2") is None
    assert is_ready(box.get("deployments", "reviews-v1"))
