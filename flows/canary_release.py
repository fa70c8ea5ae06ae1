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
from pydantic import BaseModel, Field

from canary.approvals.gates import GateContext, await_gate
from canary.cluster import ClusterConfigError, ReadinessTimeout, describe
from canary.events import EventKind
from canary.manifests import ManifestError
from canary.plan import ReleasePlan
from canary.planner import PhaseKind, phases
from canary.routing import RoutingMismatch
from tasks.context import ReleaseContext, emit
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


@flow(name="canary-release", persist_result=False)
def canary_release(
    plan: ReleasePlan,
    kubeconfig: str | None = None,
    context: str | None = None,
    mesh_url: str | None = None,
    release_id: str | None = None,
    initiator: str | None = None,
) -> ReleaseResult:
    ctx = ReleaseContext(
        plan=plan,
        release_id=release_id or flow_run.id or "local",
        kubeconfig=kubeconfig,
        kube_context=context,
        mesh_url=mesh_url,
    )
    with releasing(ctx, initiator) as release:
        release.run(isolate)
        release.run(deploy)
        release.run(test)  # when the plan has checks
        release.run(header_route)  # when the plan has a header route
        for step in release.step_names:
            release.run(weighted_step, step)
        release.run(promote)
        release.run(cleanup)
    return release.result


@contextlib.contextmanager
def releasing(ctx: ReleaseContext, initiator: str | None = None) -> Iterator[Release]:
    """Run the phases in the block; on any failure roll back and raise ReleaseRolledBack."""
    release = Release(ctx, initiator)
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

    @property
    def step_names(self) -> list[str]:
        return [p.name for p in phases(self.ctx.plan) if p.kind is PhaseKind.STEP]

    def run(self, phase_task: Any, phase_name: str | None = None) -> None:
        """Run one phase's task; phases the plan does not have are skipped."""
        name = phase_name or phase_task.name
        if not self.ctx.has_phase(name):
            return
        phase = self.ctx.phase(name)
        self.pass_gates_before(name)
        record = PhaseRecord(name=name, canary_weight=phase.canary_weight)
        self.records.append(record)
        emit(self.ctx, EventKind.PHASE_STARTED, name, canary_weight=phase.canary_weight)
        phase_task(self.ctx, name)
        record.finished, record.outcome = _now(), "completed"
        emit(self.ctx, EventKind.PHASE_FINISHED, name, canary_weight=phase.canary_weight)

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
            if not outcome.proceed:
                raise GateRefused(outcome.message)

    def roll_back(self, exc: BaseException) -> None:
        failed = self._mark_failed()
        reason = f"{failed}: {failure_reason(exc)}" if failed else failure_reason(exc)
        emit(self.ctx, EventKind.ROLLBACK, failed, message=f"rolling back: {reason}")
        try:
            done = rollback(self.ctx, reason)
        except Exception as rollback_exc:
            message = f"{reason}; rollback failed: {failure_reason(rollback_exc)}"
            emit(self.ctx, EventKind.FAILED, failed, message=message)
            raise ReleaseFailed(self.finish("failed", message, failed)) from None
        emit(self.ctx, EventKind.ROLLBACK, failed, canary_weight=0, message=f"done: {done}")
        raise ReleaseRolledBack(self.finish("rolled-back", reason, failed)) from None

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
    ManifestError,
    ReadinessTimeout,
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
