"""Health during holds: each analysis interval, every check of the phase gives a verdict.

`check_health` is the one place that decides what "healthy" means for a phase; metric
analysis adds its verdicts there.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

from canary.cluster import is_ready, readiness_summary
from canary.events import EventKind
from canary.planner import Phase
from tasks.context import ReleaseContext, cluster_of, emit
from tasks.guard import ReleaseCancelled, checkpoint

if TYPE_CHECKING:
    from canary.analysis import AnalysisResult, Analyzer

log = logging.getLogger(__name__)


class Verdict(BaseModel):
    model_config = ConfigDict(frozen=True)

    check: str
    passed: bool
    detail: str = ""
    # Not failed, not passed: the check wants more rounds before the hold may end.
    pending: bool = False
    # Seconds the round waited for a person; the hold does not count them as watched.
    waited: float = 0.0

    def line(self) -> str:
        state = "ok" if self.passed else "pending" if self.pending else "FAILED"
        return f"{self.check}: {state}" + (f" ({self.detail})" if self.detail else "")


class HealthCheckFailed(Exception):
    """The canary failed too many analysis rounds of a hold."""


def check_health(ctx: ReleaseContext, phase: Phase, hold_ending: bool = False) -> list[Verdict]:
    """The verdicts of one analysis round of `phase`.

    Metric analysis runs only while the canary carries weighted traffic: under a header
    route it sees too few requests to judge, and would only hold the release.
    """
    verdicts = [canary_ready(ctx)]
    if ctx.plan.analysis.metrics and phase.canary_weight > 0:
        verdicts.append(metric_analysis(ctx, phase, hold_ending))
    return verdicts


def canary_ready(ctx: ReleaseContext) -> Verdict:
    deployment = cluster_of(ctx).get_deployment(ctx.plan.canary_deployment)
    return Verdict(
        check="canary-ready",
        passed=is_ready(deployment),
        detail=f"{ctx.plan.canary_deployment}: {readiness_summary(deployment)}",
    )


def hold(ctx: ReleaseContext, phase: Phase) -> None:
    """Watch the canary for `phase.hold` seconds, one round each analysis interval.

    Rolls back after `analysis.threshold` failed rounds in a row, or `failure_limit`
    failed rounds in all, or when metric analysis says so; ends only after a healthy round.
    A pending round (metric analysis holding) keeps the hold going, at most
    `_undecided_limit` seconds past its end.
    """
    try:
        _hold(ctx, phase)
    finally:
        publish_analysis(ctx, phase)


def _hold(ctx: ReleaseContext, phase: Phase) -> None:
    analysis = ctx.plan.analysis
    deadline = time.monotonic() + phase.hold
    rounds = failed_in_row = failed_in_all = 0
    planned = time.monotonic()
    while True:
        planned = _next_round(planned, analysis.interval, deadline, first=rounds == 0)
        _sleep_until(planned)
        checkpoint(ctx)  # `canary abort`, a cancellation or a lost lease: roll back now
        verdicts = check_health(ctx, phase, hold_ending=planned >= deadline)
        # A person's time to answer is neither watching time nor "undecided" time past the
        # hold's end: the deadline moves by it.
        deadline += sum(v.waited for v in verdicts)
        rounds += 1
        failed = [v for v in verdicts if not v.passed and not v.pending]
        pending = [v for v in verdicts if v.pending]
        failed_in_row = failed_in_row + 1 if failed else 0
        failed_in_all += bool(failed)
        if failed:
            message = "; ".join(v.line() for v in failed)
            emit(ctx, EventKind.ANALYSIS, phase.name, message=message)
            if failed_in_row >= analysis.threshold or failed_in_all >= analysis.failure_limit:
                raise HealthCheckFailed(
                    f"{phase.name}: unhealthy in {failed_in_all} of {rounds} rounds: {message}"
                )
        elif pending:
            over = time.monotonic() - deadline
            if over >= _undecided_limit(ctx):
                message = "; ".join(v.line() for v in pending)
                raise HealthCheckFailed(
                    f"{phase.name}: analysis undecided {over:.0f}s past the hold: {message}"
                )
        elif time.monotonic() >= deadline:
            emit(ctx, EventKind.ANALYSIS, phase.name, message=_passed(rounds, phase.hold))
            return


def _undecided_limit(ctx: ReleaseContext) -> float:
    """How long past its end a hold waits for metric analysis to make up its mind.

    As many rounds as the analysis may fail before rolling back: a canary without enough
    traffic to judge must not hold the release forever.
    """
    analysis = ctx.plan.analysis
    return max(analysis.threshold, analysis.failure_limit) * analysis.interval


def _next_round(previous: float, interval: float, deadline: float, *, first: bool) -> float:
    """Rounds every interval, one at the deadline; past it (still failing), every interval.

    On a fixed cadence from the previous round's planned time, so that slow rounds (a busy
    worker, a slow Prometheus) do not space the rounds out and delay a rollback; a round
    that overran its slot is followed at once, never by a burst of catch-up rounds.
    """
    planned = previous + interval
    if first or previous < deadline:
        planned = min(planned, deadline)
    return max(planned, time.monotonic())


def _passed(rounds: int, seconds: float) -> str:
    return f"healthy: {rounds} round{'s' if rounds != 1 else ''} over {seconds:g}s"


def _sleep_until(moment: float) -> None:
    left = moment - time.monotonic()
    if left > 0:
        time.sleep(left)


# --- metric analysis -----------------------------------------------------------------


@dataclass
class _ReleaseAnalysis:
    """One release's Analyzer (it counts failed checks across the whole release)."""

    analyzer: Analyzer
    rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


_analyses: dict[str, _ReleaseAnalysis] = {}
_analyses_lock = threading.Lock()


def analysis_of(ctx: ReleaseContext) -> _ReleaseAnalysis:
    """The release's analysis, made on first use in this process."""
    from canary.analysis import Analyzer

    with _analyses_lock:
        found = _analyses.get(ctx.release_id)
        if found is None:
            found = _analyses[ctx.release_id] = _ReleaseAnalysis(Analyzer.for_plan(ctx.plan))
        return found


def metric_analysis(ctx: ReleaseContext, phase: Phase, hold_ending: bool = False) -> Verdict:
    """One Analyzer check as a verdict; raises HealthCheckFailed when it says rollback."""
    release = analysis_of(ctx)
    result = release.analyzer.check(step=phase.name, hold_ending=hold_ending)
    rows = release.rows.setdefault(phase.name, [])
    rows.extend({"phase": phase.name, **row} for row in result.rows())
    decision = str(result.decision)
    message = f"analysis {decision}: {result.reason}"
    if decision == "pause":
        message = f"analysis pause: asking a person ({result.reason})"
    emit(ctx, EventKind.ANALYSIS, phase.name, message=message)
    if decision == "rollback":
        raise HealthCheckFailed(rollback_reason(phase, result))
    if decision == "pause":
        return ask_a_person(ctx, phase, result)
    return Verdict(
        check="metric-analysis",
        passed=decision == "continue",
        pending=decision in ("hold", "pause"),
        detail=result.reason,
    )


def ask_a_person(ctx: ReleaseContext, phase: Phase, result: AnalysisResult) -> Verdict:
    """Pause the release at its current weight until someone decides.

    Approval: the hold goes on with the next round (a pending round: only a passing check
    ends a hold, so an approval never advances the canary by itself). Rejection, timeout
    or abort: rollback with the gate's message.
    """
    from prefect.context import FlowRunContext

    from canary.approvals.gates import GateContext, await_gate
    from canary.approvals.inconclusive import analysis_gate, analysis_pause_key

    verdict = {"check": "metric-analysis", "passed": False, "pending": True}
    if FlowRunContext.get() is None:
        # A phase task run on its own has no flow run to pause: hold, bounded, as for "hold".
        return Verdict(**verdict, detail=f"{result.reason}; no flow run to pause")
    started = time.monotonic()
    release = GateContext.from_plan(ctx.plan, ctx.release_id, canary_weight=phase.canary_weight)
    gate = analysis_gate(ctx.plan, phase.name, result.reason)
    outcome = await_gate(gate, release, key=analysis_pause_key(phase.name))
    if outcome.decision == "cancelled":
        raise ReleaseCancelled(outcome.message)
    if not outcome.proceed:
        raise HealthCheckFailed(outcome.message)
    waited = time.monotonic() - started
    return Verdict(**verdict, detail=f"{outcome.message}; analysis goes on", waited=waited)


def rollback_reason(phase: Phase, result: AnalysisResult) -> str:
    """One line naming the failed metrics: `request-success-rate 89.7 outside [99, +inf] ...`.

    Without the phase's name: the flow puts it in front of every rollback reason.
    """
    failed = [m for m in result.metrics if str(m.verdict) == "fail"]
    what = "; ".join(f"{m.metric} {m.reason}" for m in failed) or result.reason
    checks = result.failed_checks
    return f"{what} ({checks} failed check{'s' if checks != 1 else ''})"


def publish_analysis(ctx: ReleaseContext, phase: Phase) -> None:
    """The phase's analysis rows as a Prefect table artifact, inside a flow run only."""
    release = _analyses.get(ctx.release_id)
    rows = release.rows.pop(phase.name, None) if release else None
    if not rows or not _in_flow_run():
        return
    from prefect.artifacts import create_table_artifact

    try:
        create_table_artifact(
            table=rows,
            key=artifact_key(ctx.release_id),
            description=f"Metric analysis of {ctx.plan.service}, {phase.name}",
        )
    except Exception:  # the artifact is a report: never the reason a release fails
        log.warning("could not publish the analysis of %s", phase.name, exc_info=True)


def artifact_key(release_id: str) -> str:
    """Artifact keys allow lowercase letters, digits and dashes only."""
    slug = re.sub(r"[^a-z0-9-]+", "-", release_id.lower()).strip("-")
    return f"analysis-{slug or 'release'}"


def _in_flow_run() -> bool:
    from prefect.context import FlowRunContext, TaskRunContext

    if FlowRunContext.get() is not None:
        return True
    task = TaskRunContext.get()  # a task called on its own has no flow run
    return task is not None and task.task_run.flow_run_id is not None
