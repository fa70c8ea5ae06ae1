"""An inconclusive analysis pauses the release for a person, who is asked like at a gate."""

from __future__ import annotations

import time
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import StateType
from prefect.flow_runs import resume_flow_run
from prefect.states import Cancelling

from canary.approvals.store import gate_request
from canary.events import EventKind, ReleaseEvent
from canary.planner import canary_weight
from flows.canary_release import ReleaseRolledBack
from sandbox.prometheus import PrometheusServer, free_port
from tests.support.operators import OperatedRelease
from tests.support.prometheus import require_prometheus
from tests.support.waiting import wait_until

pytestmark = pytest.mark.usefixtures("prefect_api_url")
APPROVER = "U0ONCALL"
STEP_HOLD = 4.0


class Release(OperatedRelease):
    """canary_release in a thread, with its events, so the test can answer its pauses."""

    def paused_at(self, prefix: str, after: str | None = None, timeout: float = 30) -> str:
        """Wait until the run is paused under a key starting with `prefix` (not `after`)."""

        def key() -> str | None:
            state = _run_state(self.release_id)
            pause_key = state.state_details.pause_key if state and state.is_paused() else None
            ok = pause_key and pause_key.startswith(prefix) and pause_key != after
            return pause_key if ok else None

        return wait_until(key, timeout, interval=0.1, message=f"a pause {prefix}*")

    def weight(self) -> int:
        return canary_weight(self.plan, self.box.get("virtualservices", "reviews"))

    def finish(self) -> Any:
        self.thread.join(60)
        assert not self.thread.is_alive(), "the release did not finish"
        return self.outcome

    def started(self, phase: str) -> ReleaseEvent:
        return next(
            e for e in self.events if e.kind is EventKind.PHASE_STARTED and e.phase == phase
        )


def _flow_run(release_id: str) -> Any:
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(limit=200)
    return next((r for r in runs if r.parameters.get("release_id") == release_id), None)


def _run_state(release_id: str) -> Any:
    run = _flow_run(release_id)
    return run.state if run else None


def run_id_of(release_id: str) -> str:
    run = wait_until(lambda: _flow_run(release_id), 30, message="the flow run")
    return str(run.id)


def state_types(run_id: str) -> list[StateType]:
    with get_client(sync_client=True) as client:
        return [s.type for s in client.read_flow_run_states(run_id)]


def decide(run_id: str, decision: str, reason: str) -> None:
    """As the Prefect UI's resume form does it."""
    resume_flow_run(
        run_id, run_input={"decision": decision, "approver": APPROVER, "reason": reason}
    )


def analysis(url: str, on_unreachable: str = "pause", **extra: Any) -> dict[str, Any]:
    return {
        "interval": 1,
        "threshold": 2,
        "prometheus": {"url": url, "timeout": 1, "retries": 0, "onUnreachable": on_unreachable},
        "metrics": [
            {"name": "request-success-rate", "thresholdRange": {"min": 99}, "interval": "5s"}
        ],
        **extra,
    }


def unreachable_plan(fast_plan: Any, on_unreachable: str) -> Any:
    nobody = f"http://127.0.0.1:{free_port()}"  # a free port: connections are refused
    return fast_plan(
        tests={"port": 9080},
        steps=[{"weight": 20, "hold": STEP_HOLD}],
        analysis=analysis(nobody, on_unreachable),
    )


def test_unreachable_prometheus_pauses_the_step_and_a_rejection_rolls_back(
    start_sandbox, fast_plan
):
    box = start_sandbox("healthy")
    release = Release(unreachable_plan(fast_plan, "pause"), box, "r-pause-unreachable")
    run_id = run_id_of(release.release_id)

    key = release.paused_at("gate-analysis-step-1-")
    request = gate_request(run_id, key.removeprefix("gate-"))
    assert request is not None and request.approvers.anyone  # the plan has no gates
    assert request.title.startswith("analysis inconclusive at step-1: Prometheus at ")
    # Still paused, still at the step's weight, well past the step's hold.
    wait_until(lambda: time.monotonic() > _monotonic_of(release, "step-1") + STEP_HOLD + 1, 30)
    assert release.paused_at(key) == key and release.weight() == 20

    decide(run_id, "reject", "metrics are blind")

    outcome = release.finish()
    assert isinstance(outcome, ReleaseRolledBack), outcome
    result = outcome.result
    assert result.failed_phase == "step-1"
    assert result.reason.startswith("step-1: analysis inconclusive at step-1: Prometheus at ")
    assert f"rejected by {APPROVER}: metrics are blind" in result.reason
    assert release.weight() == 0 and box.get("deployments", "reviews-v2") is None


def test_a_run_cancelled_during_an_analysis_pause_rolls_back_and_ends_cancelled(
    start_sandbox, fast_plan
):
    box = start_sandbox("healthy")
    release = Release(unreachable_plan(fast_plan, "pause"), box, "r-pause-cancelled")
    run_id = run_id_of(release.release_id)
    release.paused_at("gate-analysis-step-1-")

    with get_client(sync_client=True) as client:
        client.set_flow_run_state(run_id, Cancelling(message="stopped from the UI"))
    release.thread.join(30)

    assert not release.thread.is_alive(), "the paused release did not see the cancellation"
    assert _run_state(release.release_id).is_cancelled()
    assert release.weight() == 0 and box.get("deployments", "reviews-v2") is None
    rollback = [e for e in release.events if e.kind is EventKind.ROLLBACK]
    assert rollback and "cancelled from Prefect" in rollback[0].message, rollback


def test_with_on_unreachable_rollback_it_rolls_back_without_a_pause(start_sandbox, fast_plan):
    box = start_sandbox("healthy")
    release = Release(unreachable_plan(fast_plan, "rollback"), box, "r-unreachable-rollback")

    outcome = release.finish()
    assert isinstance(outcome, ReleaseRolledBack), outcome
    assert outcome.result.failed_phase == "step-1"
    assert "did not answer after 1 attempts" in outcome.result.reason
    assert "prometheus.onUnreachable: rollback" in outcome.result.reason
    assert StateType.PAUSED not in state_types(run_id_of(release.release_id))
    assert not [e for e in release.events if e.kind is EventKind.APPROVAL_REQUESTED]
    assert release.weight() == 0


def test_no_data_pauses_after_the_gate_before_the_step_and_approval_lets_analysis_go_on(
    start_sandbox, fast_plan
):
    """The plan's gate before step-1 is decided first; the analysis pause is its own question."""
    binary = require_prometheus()
    box = start_sandbox("healthy", rps=100)
    with PrometheusServer([box.sandbox.metrics_url], binary=binary) as prometheus:
        gate = {"before": "step-1", "approvers": {"users": [APPROVER]}, "timeout": "60s"}
        plan = fast_plan(
            tests={"port": 9080},
            steps=[{"weight": 20, "hold": STEP_HOLD}],
            gates=[gate],
            # Never enough requests: every check is no-data, and no-data asks a person.
            analysis=analysis(prometheus.url, noData={"minRequests": 10**9, "onNoData": "pause"}),
        )
        release = Release(plan, box, "r-pause-no-data")
        run_id = run_id_of(release.release_id)

        assert release.paused_at("gate-step-1") == "gate-step-1"
        decide(run_id, "approve", "go to 20%")
        first = release.paused_at("gate-analysis-step-1-")
        request = gate_request(run_id, first.removeprefix("gate-"))
        assert request is not None and request.approvers.users == [APPROVER]
        assert request.title.startswith("analysis inconclusive at step-1: no data for ")
        assert release.weight() == 20
        # Answer only once the hold and its undecided limit (threshold x interval) are over:
        # the time a person takes must not count, so the analysis still goes on after it.
        limit = STEP_HOLD + 2 * 1 + 1
        wait_until(lambda: time.monotonic() > _monotonic_of(release, "step-1") + limit, 30)
        decide(run_id, "approve", "keep watching")
        second = release.paused_at("gate-analysis-step-1-", after=first)
        decide(run_id, "reject", "still no traffic")

        outcome = release.finish()
    assert isinstance(outcome, ReleaseRolledBack), outcome
    assert "rejected by U0ONCALL: still no traffic" in outcome.result.reason
    assert second != first
    given = [e for e in release.events if e.kind is EventKind.APPROVAL_GIVEN]
    assert [e.gate for e in given] == ["step-1", first.removeprefix("gate-")]


def _monotonic_of(release: Release, phase: str) -> float:
    """When `phase` started, on this process's monotonic clock."""
    event = release.started(phase)
    return time.monotonic() - (time.time() - event.time.timestamp())
