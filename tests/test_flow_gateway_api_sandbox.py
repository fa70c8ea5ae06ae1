"""The canary-release flow on the Gateway API, end to end on the emulated sandbox.

The sandbox's API server serves the HTTPRoutes the release writes, and its mesh routes the
simulated traffic by them. At the end of every phase, while that phase's routing holds,
traffic is sent through the traffic simulator and the versions that served it are counted
from the Istio metrics the sandbox exports; the shares must be those the HTTPRoute, as the
API server holds it, gives (its weighted rule for plain requests, its header rule for user
jason's).
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


@dataclass
class Measurement:
    route: dict[str, Any]  # the HTTPRoute the API server held while traffic was counted
    served: dict[str, float]  # requests per destination workload
    route_held: bool  # the HTTPRoute did not change while the traffic was counted

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
    """A notifier that, as each phase ends, measures the traffic split its routing gives."""

    def __init__(self, box: Any) -> None:
        self.box = box
        self.by_phase: dict[str, Measurement] = {}
        self._lock = threading.Lock()

    def notify(self, event: ReleaseEvent) -> None:
        if event.kind == EventKind.PHASE_FINISHED and event.phase:
            self.measure(event.phase)

    def measure(self, label: str) -> Measurement:
        with self._lock:
            route = copy.deepcopy(self.box.get("httproutes", "reviews"))
            before = served_by(self.box.sandbox.metrics_url)
            self.box.sandbox.simulator.send(REQUESTS_PER_PHASE)
            after = served_by(self.box.sandbox.metrics_url)
            now = self.box.get("httproutes", "reviews")
            held = _version(now) == _version(route)
            served = {
                w: after[w] - before.get(w, 0.0) for w in after if after[w] > before.get(w, 0)
            }
            self.by_phase[label] = Measurement(route, served, held)
            return self.by_phase[label]


def _version(route: dict[str, Any] | None) -> str | None:
    return (route or {}).get("metadata", {}).get("resourceVersion")


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
    assert measurement.route_held, f"{label}: the route changed while traffic was counted"
    assert measurement.total >= REQUESTS_PER_PHASE, label
    assert set(measurement.served) <= {"reviews-v1", "reviews-v2"}, (label, measurement.served)
    want = expected_share(measurement.route, "reviews-v2", jason_share)
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
    """The fast BookInfo plan on the Gateway API, its checks sent through the mesh."""
    return fast_plan(routing=GATEWAY_API)


# --- releases --------------------------------------------------------------------------------


def test_a_gateway_api_release_on_the_sandbox_is_promoted_and_traffic_follows_each_phase(
    start_sandbox, fast_plan
):
    box, plan = start_sandbox("healthy"), gateway_plan_on_the_mesh(fast_plan)
    meter = SplitMeter(box)
    jason = box.sandbox.simulator.jason_share

    with notifying(meter, timeout=120):
        result = canary_release(plan, target=box.target, release_id="r-gw-mesh")

    assert result.outcome == "promoted"
    phases = ["isolate", "deploy", "test", "header-route", "step-1", "promote", "cleanup"]
    assert [p.name for p in result.phases] == phases
    assert list(meter.by_phase) == phases
    for phase, measurement in meter.by_phase.items():
        assert_split_follows_the_route(measurement, jason, phase)
    # The shares the phases were planned to give, as the counters saw them.
    v2 = {phase: m.share("reviews-v2") for phase, m in meter.by_phase.items()}
    assert v2["isolate"] == v2["deploy"] == v2["test"] == 0.0
    assert 0 < v2["header-route"] < 0.2  # only jason (a tenth of the users) on v2
    assert 0.1 < v2["step-1"] < 0.4  # 20 % of the others, and jason
    assert v2["promote"] == v2["cleanup"] == 1.0

    final = meter.measure("after")
    assert_split_follows_the_route(final, jason, "after")
    assert final.share("reviews-v2") == 1.0
    route = box.get("httproutes", "reviews")
    assert [[b["name"] for b in r["backendRefs"]] for r in route["spec"]["rules"]] == [
        ["reviews-v2"]
    ]
    assert box.get("services", "reviews-v1") is None  # made by the release, retired
    assert created_by(box.get("services", "reviews-v2")) == "r-gw-mesh"
    assert box.get("deployments", "reviews-v1") is None
    assert is_ready(box.get("deployments", "reviews-v2"))
    assert box.get("virtualservices", "reviews") is None


def test_a_faulty_canary_on_the_gateway_api_is_rolled_back_to_all_on_stable(
    start_sandbox, fast_plan
):
    box, plan = start_sandbox("faulty"), gateway_plan_on_the_mesh(fast_plan)
    meter = SplitMeter(box)
    jason = box.sandbox.simulator.jason_share

    with notifying(meter, timeout=120), pytest.raises(ReleaseRolledBack) as raised:
        canary_release(plan, target=box.target, release_id="r-gw-faulty")

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
