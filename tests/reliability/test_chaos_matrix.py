"""Releases under injected faults: they always end, and never strand traffic.

Each fault runs with every seed in CHAOS_SEEDS (default 1-5), the seeds' releases at the
same time, each against its own sandbox. Two invariants:

* Traffic goes only to versions with ready pods. The mesh's routing table is sampled every
  few milliseconds; a sample in which some share of a service's requests would end on a
  mesh answer (503 no healthy upstream or cluster not found, 404 no route) is a violation.
  The sandbox applies configuration at once, so no propagation window is allowed: the
  router's make-before-break order must hold on its own. The exception is a canary whose
  readiness flaps: Istio, like the sandbox, answers 503 UH for its share while its pods
  are down; those samples are counted, and the release must still end.
* The release ends, promoted or rolled back, within END_WITHIN seconds, and the cluster
  agrees with the outcome. An analysis that cannot decide asks a person, who lets it go on
  (OnCall).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest

from canary.approvals.decisions import DecisionError, auto_approve
from canary.events import EventKind, ReleaseEvent
from canary.notify import notifying
from canary.planner import canary_weight, managed_route_names
from canary.slack.api import slack_client
from canary.slack.thread import SlackNotifier
from flows.canary_release import ReleaseRolledBack
from sandbox.prometheus import PrometheusServer
from tests.reliability.helpers import BackgroundRelease, RoutingSampler, assert_all_on_stable
from tests.support.prometheus import require_prometheus
from tests.support.slack_stub import BOT_TOKEN, SlackStub

pytestmark = pytest.mark.usefixtures("prefect_api_url")

SEEDS = [int(s) for s in os.environ.get("CHAOS_SEEDS", "1,2,3,4,5").split(",")]
END_WITHIN = 90.0


@dataclass
class Trial:
    """One release under one fault, with one seed."""

    box: Any
    seed: int
    fast_plan: Any
    plan: Any = None
    prometheus: PrometheusServer | None = None
    slack: SlackStub | None = None


@dataclass(frozen=True)
class Fault:
    name: str
    chaos: str = ""  # the sandbox's chaos spec, without the seed
    metrics: bool = False  # the plan judges Prometheus metrics
    at_step: Callable[[Trial], contextlib.AbstractContextManager[None]] | None = None
    slack: bool = False
    short_api_timeout: bool = False
    flapping: bool = False

    def injected(self, trial: Trial) -> int:
        """How many faults were injected: zero means the test tested nothing."""
        if self.slack:  # one stub for every seed: its failures count for each
            return sum(c.status != 200 for c in trial.slack.calls)
        if self.at_step is not None and not self.chaos:
            return 1  # the outage below is started by the test itself
        return sum(trial.box.sandbox.chaos.injected.values())


@contextlib.contextmanager
def metrics_outage(trial: Trial) -> Iterator[None]:
    trial.box.sandbox.chaos.metrics_outage(5.0)  # Prometheus scrapes fail: a gap in its series
    yield


@contextlib.contextmanager
def prometheus_stopped(trial: Trial) -> Iterator[None]:
    prometheus = trial.prometheus
    prometheus.pause()  # queries hang past the plan's timeout, for a while
    wake = threading.Timer(4.0, prometheus.resume)
    wake.start()
    try:
        yield
    finally:
        wake.cancel()
        prometheus.resume()


@contextlib.contextmanager
def slack_fails_again(trial: Trial) -> Iterator[None]:
    trial.slack.fail_next(429, 1, retry_after=1)  # and again, in the middle of a step
    trial.slack.fail_next(500, 1)
    yield


FAULTS = [
    Fault("api-500", "api-500=0.1"),
    Fault("api-409", "api-409=0.25"),
    Fault(
        "api-slow-dropped-timeouts",
        "api-slow=0.15,slow=100ms,api-drop=0.03,api-stall=0.05,stall=1200ms",
        short_api_timeout=True,
    ),
    Fault("metrics-outage", metrics=True, at_step=metrics_outage),
    Fault("prometheus-stopped", metrics=True, at_step=prometheus_stopped),
    Fault("slack-429-500", slack=True, at_step=slack_fails_again),
    Fault("readiness-flaps", "flap=0.4,flap-window=500ms,flap-versions=v2", flapping=True),
]


@pytest.mark.parametrize("fault", FAULTS, ids=lambda f: f.name)
def test_releases_under_chaos_end_and_never_strand_traffic(
    fault: Fault, start_sandbox, fast_plan, monkeypatch
):
    """All seeds of a fault at once, each release on its own sandbox (they mostly wait)."""
    if fault.short_api_timeout:  # a stall then outlasts the client, as a real timeout does
        for module in ("canary.cluster", "canary.routing.custom_objects", "canary.lease"):
            monkeypatch.setattr(f"{module}.REQUEST_TIMEOUT", (0.5, 1.0))
    with fault_setup(fault) as slack:
        trials = [new_trial(fault, seed, start_sandbox, fast_plan, slack) for seed in SEEDS]
        with ThreadPoolExecutor(len(trials)) as pool:
            reports = list(pool.map(lambda trial: run_trial(fault, trial), trials))
    failures = [r for r in reports if r.error is not None]
    for report in reports:
        print(report.line())
    assert not failures, "\n".join(r.line() for r in failures)


@dataclass
class Report:
    fault: str
    seed: int
    outcome: str = ""
    injected: int = 0
    samples: int = 0
    stranded: int = 0
    error: BaseException | None = None

    def line(self) -> str:
        head = f"{self.fault} seed={self.seed}: "
        if self.error is not None:
            return head + f"FAILED: {self.error!r}"
        return head + (f"{self.outcome}; {self.injected} faults injected; {self.samples} "
                       f"routing samples, {self.stranded} with stranded traffic")  # fmt: skip


def run_trial(fault: Fault, trial: Trial) -> Report:
    report = Report(fault.name, trial.seed)
    try:
        with contextlib.ExitStack() as stack:
            if fault.metrics:
                trial.prometheus = stack.enter_context(prometheus_for(trial.box))
            trial.plan = matrix_plan(trial.fast_plan, trial.prometheus)
            sampler = stack.enter_context(RoutingSampler(trial.box, interval=0.01))
            release = BackgroundRelease(trial.plan, trial.box)
            if fault.at_step is not None:
                release.wait_for_phase("step-1")
                stack.enter_context(fault.at_step(trial))
            report.outcome = ended(release.finish(END_WITHIN))
        report.injected = fault.injected(trial)
        report.samples, report.stranded = sampler.samples, len(sampler.stranded)
        assert report.injected > 0, "no fault was injected"
        assert report.samples > 100, "the routing was hardly sampled"
        assert_cluster_agrees(trial.box, trial.plan, report.outcome)
        if not fault.flapping:
            assert sampler.stranded == [], f"traffic stranded: {sampler.stranded[:3]}"
    except BaseException as exc:  # reported with the seed, after every seed has run
        report.error = exc
    return report


@contextlib.contextmanager
def fault_setup(fault: Fault) -> Iterator[SlackStub | None]:
    """What every seed of a fault shares: the person on call, the Slack stub and its notifier."""
    if not fault.slack:
        with notifying(OnCall()):
            yield None
        return
    with SlackStub() as stub:
        stub.fail_next(429, 2, retry_after=1)
        stub.fail_next(500, 2)
        slack = SlackNotifier("C0CHAOS", slack_client(BOT_TOKEN, stub.url))
        with notifying(OnCall(), slack):
            yield stub


class OnCall:
    """The person a release asks when its analysis cannot decide: lets it go on.

    A gap in the metrics can leave a healthy canary's counts inconclusive at a hold's end
    (one 5xx in 31 requests); the release then asks a person, as it should, and without an
    answer it would wait for the gate's 30 minutes. The matrix's plans have no gates of
    their own, so every request for approval is such a pause.
    """

    def notify(self, event: ReleaseEvent) -> None:
        if event.kind is EventKind.APPROVAL_REQUESTED:
            # The release id is the flow run id: the matrix's releases are not given one.
            run_and_gate = (event.identity.release_id, event.gate or event.phase)
            threading.Thread(target=self.approve, args=run_and_gate, daemon=True).start()

    @staticmethod
    def approve(run_id: str, gate: str | None) -> None:
        try:
            auto_approve(run_id, gate, who="on-call", timeout=60)
        except DecisionError as exc:  # the release then waits, and its trial fails
            print(f"on call: not answered: {exc}")


def new_trial(fault: Fault, seed: int, start_sandbox: Any, fast_plan: Any, slack: Any) -> Trial:
    chaos = f"seed={seed},{fault.chaos}"
    return Trial(start_sandbox("healthy", seed=seed, chaos=chaos), seed, fast_plan, slack=slack)


@contextlib.contextmanager
def prometheus_for(box: Any) -> Iterator[PrometheusServer]:
    with PrometheusServer([box.sandbox.metrics_url], binary=require_prometheus()) as server:
        yield server


def matrix_plan(fast_plan: Any, prometheus: PrometheusServer | None) -> Any:
    analysis: dict[str, Any] = {"interval": 1, "threshold": 2}
    if prometheus is not None:
        # Nobody answers here: no data fails a check rather than ask at the hold's end.
        analysis |= {
            "noData": {"minRequests": 5, "onNoData": "fail"},
            "prometheus": {"url": prometheus.url, "timeout": 1, "retries": 1,
                           "onUnreachable": "rollback"},
            "metrics": [{"name": "request-success-rate", "thresholdRange": {"min": 99},
                         "interval": "5s"}],
        }  # fmt: skip
    return fast_plan(
        steps=[{"weight": 20, "hold": "3s"}], analysis=analysis, timeouts={"readiness": 20}
    )


def ended(state: Any) -> str:
    """promoted or rolled-back; anything else fails the test."""
    if state.is_completed():
        return "promoted"
    error = state.result(raise_on_failure=False)
    assert isinstance(error, ReleaseRolledBack), f"the release did not end cleanly: {error!r}"
    assert error.result.outcome == "rolled-back", error.result.reason
    return "rolled-back"


def assert_cluster_agrees(box: Any, plan: Any, outcome: str) -> None:
    if outcome == "rolled-back":
        assert_all_on_stable(box, plan)
        return
    vs = box.get("virtualservices", plan.virtual_service)
    assert canary_weight(plan, vs) == 100 and managed_route_names(vs) == []
    assert box.get("deployments", plan.stable_deployment) is None
    assert box.get("deployments", plan.canary_deployment) is not None
