"""The canary release flow: isolate, deploy, test, header route, steps, promote, cleanup.

Any failure, at any point, rolls back: all traffic to stable, the canary removed, and
the flow ends Failed with the reason (a `ReleaseRolledBack` carrying the result).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, Literal

from prefect import flow
from prefect.runtime import flow_run
from prefect.states import Cancelled, State
from pydantic import BaseModel, Field

from canary.approvals.gates import GateContext, await_gate
from canary.cluster import ClusterConfigError, ReadinessTimeout, describe
from canary.events import EventKind
from canary.lease import LeaseLost
from canary.manifests import ManifestError
from canary.plan import ReleasePlan
from canary.planner import PhaseKind, phases
from canary.report import reporting
from canary.routing import RoutingMismatch
from canary.variables import prune_quietly
from tasks.context import ReleaseContext, emit
from tasks.guard import ReleaseCancelled, ReleaseRefused, ReleaseStopped, checkpoint, guarding
from tasks.health import HealthCheckFailed
from tasks.phases import (
    ChecksFailed,
    RollbackImpossible,
    StableMissing,
    cleanup,
    deploy,
    header_route,
    isolate,
    promote,
    rollback,
    test,
    weighted_step,
)
from tasks.recovery import roll_back_stopped_run

Outcome = Literal["promoted", "rolled-back", "failed"]


def _now() -> datetime:
    return datetime.now(UTC)


class PhaseRecord(BaseModel):
    name: str
    canary_weight: int
    started: datetime = Field(default_factory=_now)
    finished: datetime | None = None
    outcome: Literal["running", "completed", "failed"] = "running"


class ReleaseResult(BaseModel):
    release_id: str
    service: str
    namespace: str
    stable_version: str
    canary_version: str
    outcome: Outcome
    reason: str
    failed_phase: str | None = None
    started: datetime
    finished: datetime
    phases: list[PhaseRecord]

    @property
    def duration(self) -> float:
        return (self.finished - self.started).total_seconds()


class GateRefused(Exception):
    """A gate was rejected, timed out or the release was aborted there."""


class ReleaseRolledBack(Exception):
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
    kubeconfig: str | None = None,
    context: str | None = None,
    mesh_url: str | None = None,
    release_id: str | None = None,
    initiator: str | None = None,
) -> ReleaseResult | State:
    ctx = ReleaseContext(
        plan=plan,
        release_id=release_id or flow_run.id or "local",
        kubeconfig=kubeconfig,
        kube_context=context,
        mesh_url=mesh_url,
    )
    try:
        # Before any change: take the service's lease (or refuse), and adopt an unfinished
        # release of this plan, to resume it where it stopped.
        with (
            guarding(ctx, release_id) as guarded,
            releasing(guarded.ctx, initiator, guarded.resume_from) as release,
        ):
            release.run(isolate)
            release.run(deploy)
            release.run(test)  # when the plan has checks
            release.run(header_route)  # when the plan has a header route
            for step in release.step_names:
                release.run(weighted_step, step)
            release.run(promote)
            release.run(cleanup)
    except RunCancelled as exc:
        return Cancelled(message=str(exc), data=exc)  # the run ends Cancelled, not Failed
    finally:
        prune_quietly()  # old releases' state; logs its own failures, never raises
    return release.result


@contextlib.contextmanager
def releasing(
    ctx: ReleaseContext, initiator: str | None = None, resume_from: str | None = None
) -> Iterator[Release]:
    """Run the phases in the block; on any failure roll back and raise ReleaseRolledBack.

    Either way the release's report is published when it ends (canary.report). Phases
    before `resume_from` are done already (a resumed release) and are skipped.
    """
    release = Release(ctx, initiator)
    release.resume_from = resume_from
    with reporting(ctx.plan, ctx.release_id, lambda: release.result):
        try:
            yield release
        except (Exception, KeyboardInterrupt) as exc:
            release.roll_back(exc)
        else:
            release.finish("promoted", "all traffic on the canary")


class Release:
    """The phases run so far, and the events that tell about them."""

    def __init__(self, ctx: ReleaseContext, initiator: str | None = None):
        self.ctx = ctx
        self.initiator = initiator
        self.started = _now()
        self.records: list[PhaseRecord] = []
        self.result: ReleaseResult | None = None
        self.resume_from: str | None = None

    @property
    def step_names(self) -> list[str]:
        return [p.name for p in phases(self.ctx.plan) if p.kind is PhaseKind.STEP]

    def run(self, phase_task: Any, phase_name: str | None = None) -> None:
        """Run one phase's task; phases the plan does not have are skipped."""
        name = phase_name or phase_task.name
        if not self.ctx.has_phase(name) or self._done_before_resume(name):
            return
        checkpoint(self.ctx)  # an abort, a cancellation or a lost lease stops here
        phase = self.ctx.phase(name)
        self.pass_gates_before(name)
        record = PhaseRecord(name=name, canary_weight=phase.canary_weight)
        self.records.append(record)
        emit(self.ctx, EventKind.PHASE_STARTED, name, canary_weight=phase.canary_weight)
        phase_task(self.ctx, name)
        record.finished, record.outcome = _now(), "completed"
        emit(self.ctx, EventKind.PHASE_FINISHED, name, canary_weight=phase.canary_weight)

    def _done_before_resume(self, name: str) -> bool:
        if self.resume_from is None:
            return False
        order = [p.name for p in phases(self.ctx.plan)]
        return order.index(name) < order.index(self.resume_from)

    def pass_gates_before(self, phase_name: str) -> None:
        """Wait for the humans the plan asks for here; a refusal or timeout rolls back."""
        for gate in self.ctx.plan.gates:
            if gate.before != phase_name:
                continue
            weight = self.records[-1].canary_weight if self.records else 0
            release = GateContext.from_plan(
                self.ctx.plan, self.ctx.release_id, initiator=self.initiator, canary_weight=weight
            )
            outcome = await_gate(gate, release)
            if outcome.decision == "cancelled":  # rolls back, then the run ends Cancelled
                raise ReleaseCancelled(outcome.message)
            if not outcome.proceed:
                raise GateRefused(outcome.message)

    def roll_back(self, exc: BaseException) -> None:
        failed = self._mark_failed()
        reason = f"{failed}: {failure_reason(exc)}" if failed else failure_reason(exc)
        if isinstance(exc, LeaseLost):  # another release owns the traffic now: leave it be
            emit(self.ctx, EventKind.FAILED, failed, message=reason)
            raise ReleaseFailed(self.finish("failed", reason, failed)) from None
        emit(self.ctx, EventKind.ROLLBACK, failed, message=f"rolling back: {reason}")
        try:
            done = rollback(self.ctx, reason)
        except Exception as rollback_exc:
            message = f"{reason}; rollback failed: {failure_reason(rollback_exc)}"
            emit(self.ctx, EventKind.FAILED, failed, message=message)
            raise ReleaseFailed(self.finish("failed", message, failed)) from None
        emit(self.ctx, EventKind.ROLLBACK, failed, canary_weight=0, message=f"done: {done}")
        ended = RunCancelled if isinstance(exc, ReleaseCancelled) else ReleaseRolledBack
        raise ended(self.finish("rolled-back", reason, failed)) from None

    def finish(self, outcome: Outcome, reason: str, failed: str | None = None) -> ReleaseResult:
        plan = self.ctx.plan
        self.result = ReleaseResult(
            release_id=self.ctx.release_id,
            service=plan.service,
            namespace=plan.namespace,
            stable_version=plan.stable.version,
            canary_version=plan.canary.version,
            outcome=outcome,
            reason=reason,
            failed_phase=failed,
            started=self.started,
            finished=_now(),
            phases=self.records,
        )
        if outcome == "promoted":
            emit(self.ctx, EventKind.PROMOTED, canary_weight=100, message=reason)
        return self.result

    def _mark_failed(self) -> str | None:
        running = [r for r in self.records if r.outcome == "running"]
        for record in running:
            record.finished, record.outcome = _now(), "failed"
        return running[-1].name if running else None


# Failures whose message says it all; anything else also gets its type named.
_EXPLAINED = (
    ChecksFailed,
    GateRefused,
    ClusterConfigError,
    HealthCheckFailed,
    LeaseLost,
    ManifestError,
    ReadinessTimeout,
    ReleaseRefused,
    ReleaseStopped,
    RollbackImpossible,
    RoutingMismatch,
    StableMissing,
)


def failure_reason(exc: BaseException) -> str:
    """One line that says what went wrong."""
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    text = (str(exc).strip().splitlines() or [""])[0]
    if isinstance(exc, _EXPLAINED) and text:
        return text
    return describe(exc)
