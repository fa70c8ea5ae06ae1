"""What one analysis round of a hold checks: the canary is ready, and metric analysis.

`check_round` is the one place that decides what "healthy" means for a phase; the hold
loop (canary.hold) counts its results. Metric analysis asks a person, through the same
pause as the plan's gates, when the Analyzer cannot decide on its own.
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
from canary.errors import CanaryError
from canary.events import EventKind
from canary.planner import Phase
from canary.release import Release, cluster_of, emit
from canary.stopping import ReleaseCancelled

if TYPE_CHECKING:
    from canary.analysis.analyzer import AnalysisResult, Analyzer

log = logging.getLogger(__name__)


class RoundCheck(BaseModel):
    """One check of one round: passed, failed, or pending (it wants more rounds)."""

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


class HealthCheckFailed(CanaryError):
    """The canary failed too many analysis rounds of a hold."""


def check_round(release: Release, phase: Phase, hold_ending: bool = False) -> list[RoundCheck]:
    """The checks of one analysis round of `phase`; `hold_ending`: the hold ends with this
    round unless it keeps the hold going.

    Metric analysis runs only while the canary carries weighted traffic: under a header
    route it sees too few requests to judge, and would only hold the release.
    """
    checks = [canary_ready(release)]
    if release.plan.analysis.metrics and phase.canary_weight > 0:
        checks.append(metric_analysis(release, phase, hold_ending))
    return checks


def canary_ready(release: Release) -> RoundCheck:
    name = release.plan.canary_deployment
    deployment = cluster_of(release).get_deployment(name)
    return RoundCheck(
        check="canary-ready",
        passed=is_ready(deployment),
        detail=f"{name}: {readiness_summary(deployment)}",
    )


# --- metric analysis -----------------------------------------------------------------


@dataclass
class _ReleaseAnalysis:
    """One release's Analyzer (it counts failed checks across the whole release)."""

    analyzer: Analyzer
    rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


_analyses: dict[str, _ReleaseAnalysis] = {}
_analyses_lock = threading.Lock()


def analysis_of(release: Release) -> _ReleaseAnalysis:
    """The release's analysis, made on first use in this process."""
    from canary.analysis.analyzer import Analyzer

    with _analyses_lock:
        found = _analyses.get(release.release_id)
        if found is None:
            analyzer = Analyzer.for_plan(release.plan)
            found = _analyses[release.release_id] = _ReleaseAnalysis(analyzer)
        return found


def metric_analysis(release: Release, phase: Phase, hold_ending: bool = False) -> RoundCheck:
    """One Analyzer check as a round check; raises HealthCheckFailed when it says rollback."""
    analysis = analysis_of(release)
    result = analysis.analyzer.check(step=phase.name, hold_ending=hold_ending)
    rows = analysis.rows.setdefault(phase.name, [])
    rows.extend({"phase": phase.name, **row} for row in result.rows())
    decision = result.decision.value
    message = f"analysis {decision}: {result.reason}"
    if decision == "pause":
        message = f"analysis pause: asking a person ({result.reason})"
    emit(release, EventKind.ANALYSIS, phase.name, decision=decision, message=message)
    if decision == "rollback":
        raise HealthCheckFailed(rollback_reason(result))
    if decision == "pause":
        return ask_a_person(release, phase, result)
    return RoundCheck(
        check="metric-analysis",
        passed=decision == "continue",
        pending=decision == "hold",
        detail=result.reason,
    )


def ask_a_person(release: Release, phase: Phase, result: AnalysisResult) -> RoundCheck:
    """Pause the release at its current weight until someone decides.

    Approval: the hold goes on with the next round (a pending round: only a passing check
    ends a hold, so an approval never advances the canary by itself). Rejection, timeout
    or abort: rollback with the gate's message.
    """
    from prefect.context import FlowRunContext

    from canary.approvals.inconclusive import analysis_gate, analysis_pause_key
    from canary.approvals.pause import await_gate

    pending = {"check": "metric-analysis", "passed": False, "pending": True}
    if FlowRunContext.get() is None:
        # A phase task run on its own has no flow run to pause: hold, bounded, as for "hold".
        return RoundCheck(**pending, detail=f"{result.reason}; no flow run to pause")
    started = time.monotonic()
    gate = analysis_gate(release.plan, phase.name, result.reason)
    outcome = await_gate(
        gate, release, canary_weight=phase.canary_weight, key=analysis_pause_key(phase.name)
    )
    if outcome.decision == "cancelled":
        raise ReleaseCancelled(outcome.message)
    if not outcome.proceed:
        raise HealthCheckFailed(outcome.message)
    waited = time.monotonic() - started
    return RoundCheck(**pending, detail=f"{outcome.message}; analysis goes on", waited=waited)


def rollback_reason(result: AnalysisResult) -> str:
    """One line naming the failed metrics: `request-success-rate 89.7 outside [99, +inf] ...`.

    Without the phase's name: the flow puts it in front of every rollback reason.
    """
    failed = [m for m in result.metrics if m.verdict.value == "fail"]
    what = "; ".join(f"{m.metric} {m.reason}" for m in failed) or result.reason
    checks = result.failed_checks
    return f"{what} ({checks} failed check{'s' if checks != 1 else ''})"


def publish_analysis(release: Release, phase: Phase) -> None:
    """The phase's analysis rows as a Prefect table artifact, inside a flow run only."""
    analysis = _analyses.get(release.release_id)
    rows = analysis.rows.pop(phase.name, None) if analysis else None
    if not rows or not _in_flow_run():
        return
    from prefect.artifacts import create_table_artifact

    try:
        create_table_artifact(
            table=rows,
            key=artifact_key(release.release_id),
            description=f"Metric analysis of {release.plan.service}, {phase.name}",
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
