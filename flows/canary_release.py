"""The canary release flow: isolate, deploy, test, header route, steps, promote, cleanup.

Any failure, at any point, rolls back: all traffic to stable, the canary removed, and
the flow ends Failed with the reason (a `ReleaseRolledBack` carrying the result).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from prefect import flow
from prefect.runtime import flow_run
from prefect.states import Cancelled, State

from canary.approvals.pause import await_gate
from canary.control.retry import retried_message
from canary.control.watch import ReleaseControl
from canary.errors import CanaryError, reason_of
from canary.events import EventKind
from canary.lease import LeaseLost
from canary.ownership import checkpoint, guarding, raise_if_terminated
from canary.plan import ReleasePlan
from canary.planner import PhaseKind, phases
from canary.prefect_variables import prune_quietly
from canary.preflight import check_before_writing
from canary.recovery import roll_back_stopped_run
from canary.release import Outcome, PhaseRecord, Release, ReleaseResult, ReleaseTarget, emit
from canary.stopping import ReleaseAborted, ReleaseCancelled
from canary.wiring import reporting_release
from tasks.phases import (
    cleanup,
    deploy,
    header_route,
    isolate,
    promote,
    rollback,
    test,
    weighted_step,
)


class GateRefused(CanaryError):
    """A gate was rejected, timed out or the release was aborted there."""


class ReleaseRolledBack(CanaryError):
    """The release failed and was rolled back; `result` tells why and what ran."""

    def __init__(self, result: ReleaseResult):
        self.result = result
        super().__init__(f"rolled back: {result.reason}")

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.result,)


class ReleaseFailed(ReleaseRolledBack):
    """The release failed and so did its rollback: traffic may not be on stable."""

    def __init__(self, result: ReleaseResult):
        super().__init__(result)
        self.args = (f"release failed and rollback did not complete: {result.reason}",)


class RunCancelled(ReleaseRolledBack):
    """The run was cancelled from Prefect; the release was rolled back."""


@flow(
    name="canary-release",
    persist_result=False,
    # A cancelled or crashed run's own code may not get to roll back: these do.
    on_cancellation=[roll_back_stopped_run],
    on_crashed=[roll_back_stopped_run],
)
def canary_release(
    plan: ReleasePlan,
    target: ReleaseTarget | None = None,
    release_id: str | None = None,
    initiator: str | None = None,
    retry_of: str | None = None,
) -> ReleaseResult | State:
    release = Release(
        plan=plan,
        release_id=release_id or flow_run.id or "local",
        target=target or ReleaseTarget(),
        initiator=initiator,
        retry_of=retry_of,
    )
    try:
        # Before any change: refuse a plan that points at objects it must not touch, take
        # the service's lease (or refuse), and adopt an unfinished release of this plan,
        # to resume it where it stopped.
        check_before_writing(release)
        with (
            guarding(release, explicit_id=release_id is not None) as guarded,
            releasing(guarded.release, guarded.resume_from, guarded.control) as progress,
        ):
            progress.run(isolate)
            progress.run(deploy)
            progress.run(test)  # when the plan has checks
            progress.run(header_route)  # when the plan has a header route
            for step in progress.step_names:
                progress.run(weighted_step, step)
            progress.run(promote)
            progress.run(cleanup)
    except RunCancelled as exc:
        return Cancelled(message=str(exc), data=exc)  # the run ends Cancelled, not Failed
    finally:
        prune_quietly()  # old releases' state; logs its own failures, never raises
    return progress.result


@contextlib.contextmanager
def releasing(
    release: Release, resume_from: str | None = None, control: ReleaseControl | None = None
) -> Iterator[ReleaseProgress]:
    """Run the phases in the block; on any failure roll back and raise ReleaseRolledBack.

    Everything the release reports to gets its events, and its report is published when
    it ends (canary.wiring). Phases before `resume_from` are done already (a resumed
    release) and are skipped, and so are those an operator's full promotion skips
    (`control`, canary.control).
    """
    progress = ReleaseProgress(release, resume_from, control)
    with reporting_release(release, lambda: progress.result):
        try:
            progress.tell_retry()
            yield progress
        except (Exception, KeyboardInterrupt) as exc:
            raise_if_terminated(release)  # the crash hooks roll a terminated run back
            progress.roll_back(exc)
        else:
            progress.finish("promoted", "all traffic on the canary")


def _now() -> datetime:
    return datetime.now(UTC)


class ReleaseProgress:
    """The phases run so far, and the events that tell about them."""

    def __init__(
        self,
        release: Release,
        resume_from: str | None = None,
        control: ReleaseControl | None = None,
    ):
        self.release = release
        self.resume_from = resume_from
        self.control = control
        self.started = _now()
        self.records: list[PhaseRecord] = []
        self.result: ReleaseResult | None = None

    @property
    def step_names(self) -> list[str]:
        return [p.name for p in phases(self.release.plan) if p.kind is PhaseKind.STEP]

    def run(self, phase_task: Any, phase_name: str | None = None) -> None:
        """Run one phase's task; phases the plan does not have are skipped."""
        release, name = self.release, phase_name or phase_task.name
        if not release.has_phase(name) or self._done_before_resume(name):
            return
        if self.control is not None and self.control.skips(name):
            return  # an operator's promote --full: its gates are skipped with it
        checkpoint(release)  # an abort, a cancellation or a lost lease stops here
        phase = release.phase(name)
        self.pass_gates_before(name)
        record = PhaseRecord(name=name, canary_weight=phase.canary_weight)
        self.records.append(record)
        emit(release, EventKind.PHASE_STARTED, name, canary_weight=phase.canary_weight)
        phase_task(release, name)
        record.finished, record.outcome = _now(), "completed"
        emit(release, EventKind.PHASE_FINISHED, name, canary_weight=phase.canary_weight)

    def _done_before_resume(self, name: str) -> bool:
        if self.resume_from is None:
            return False
        order = [p.name for p in phases(self.release.plan)]
        return order.index(name) < order.index(self.resume_from)

    def pass_gates_before(self, phase_name: str) -> None:
        """Wait for the humans the plan asks for here; a refusal or timeout rolls back."""
        for gate in self.release.plan.gates:
            if gate.before != phase_name:
                continue
            weight = self.records[-1].canary_weight if self.records else 0
            outcome = await_gate(gate, self.release, canary_weight=weight)
            if outcome.decision == "cancelled":  # rolls back, then the run ends Cancelled
                raise ReleaseCancelled(outcome.message)
            if not outcome.proceed:
                raise GateRefused(outcome.message)

    def tell_retry(self) -> None:
        """A retried release names the run it retries, first thing."""
        if self.release.retry_of is not None:
            message = retried_message(self.release.retry_of)
            emit(
                self.release, EventKind.OPERATOR_RETRIED, decision="operator-retry", message=message
            )

    def roll_back(self, exc: BaseException) -> None:
        release = self.release
        failed = self._mark_failed()
        reason = f"{failed}: {reason_of(exc)}" if failed else reason_of(exc)
        if self.control is not None:  # operators' requests from now on: "rolling back"
            self.control.rolling_back(reason, aborted=isinstance(exc, ReleaseAborted))
        if isinstance(exc, LeaseLost):  # another release owns the traffic now: leave it be
            emit(release, EventKind.FAILED, failed, message=reason)
            raise ReleaseFailed(self.finish("failed", reason, failed)) from None
        emit(release, EventKind.ROLLBACK, failed, message=f"rolling back: {reason}")
        try:
            done = rollback(release, reason)
        except Exception as rollback_exc:
            message = f"{reason}; rollback failed: {reason_of(rollback_exc)}"
            emit(release, EventKind.FAILED, failed, message=message)
            raise ReleaseFailed(self.finish("failed", message, failed)) from None
        emit(release, EventKind.ROLLBACK, failed, canary_weight=0, message=f"done: {done}")
        ended = RunCancelled if isinstance(exc, ReleaseCancelled) else ReleaseRolledBack
        raise ended(self.finish("rolled-back", reason, failed)) from None

    def finish(self, outcome: Outcome, reason: str, failed: str | None = None) -> ReleaseResult:
        self.result = ReleaseResult(
            identity=self.release.identity,
            outcome=outcome,
            reason=reason,
            failed_phase=failed,
            retry_of=self.release.retry_of,
            started=self.started,
            finished=_now(),
            phases=self.records,
        )
        if outcome == "promoted":
            emit(self.release, EventKind.PROMOTED, canary_weight=100, message=reason)
        if self.control is not None:
            self.control.ended(self.result)
        return self.result

    def _mark_failed(self) -> str | None:
        running = [r for r in self.records if r.outcome == "running"]
        for record in running:
            record.finished, record.outcome = _now(), "failed"
        return running[-1].name if running else None
