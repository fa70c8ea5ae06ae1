"""Health during holds: each analysis interval, every check of the phase gives a verdict.

`check_health` is the one place that decides what "healthy" means for a phase; metric
analysis adds its verdicts there.
"""

from __future__ import annotations

import time

from pydantic import BaseModel, ConfigDict

from canary.cluster import is_ready, readiness_summary
from canary.events import EventKind
from canary.planner import Phase
from tasks.context import ReleaseContext, cluster_of, emit


class Verdict(BaseModel):
    model_config = ConfigDict(frozen=True)

    check: str
    passed: bool
    detail: str = ""

    def line(self) -> str:
        return f"{self.check}: {'ok' if self.passed else 'FAILED'}" + (
            f" ({self.detail})" if self.detail else ""
        )


class HealthCheckFailed(Exception):
    """The canary failed too many analysis rounds of a hold."""


def check_health(ctx: ReleaseContext, phase: Phase) -> list[Verdict]:
    """The verdicts of one analysis round of `phase`."""
    return [canary_ready(ctx)]


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
    failed rounds in all; ends only after a healthy round.
    """
    analysis = ctx.plan.analysis
    deadline = time.monotonic() + phase.hold
    rounds = failed_in_row = failed_in_all = 0
    while True:
        _sleep_until(_next_round(analysis.interval, deadline, first=rounds == 0))
        verdicts = check_health(ctx, phase)
        rounds += 1
        failed = [v for v in verdicts if not v.passed]
        failed_in_row = failed_in_row + 1 if failed else 0
        failed_in_all += bool(failed)
        if failed:
            message = "; ".join(v.line() for v in failed)
            emit(ctx, EventKind.ANALYSIS, phase.name, message=message)
            if failed_in_row >= analysis.threshold or failed_in_all >= analysis.failure_limit:
                raise HealthCheckFailed(
                    f"{phase.name}: unhealthy in {failed_in_all} of {rounds} rounds: {message}"
                )
        elif time.monotonic() >= deadline:
            emit(ctx, EventKind.ANALYSIS, phase.name, message=_passed(rounds, phase.hold))
            return


def _next_round(interval: float, deadline: float, *, first: bool) -> float:
    """Rounds every interval, one at the deadline; past it (still failing), every interval."""
    now = time.monotonic()
    if first or now < deadline:
        return min(now + interval, deadline)
    return now + interval


def _passed(rounds: int, seconds: float) -> str:
    return f"healthy: {rounds} round{'s' if rounds != 1 else ''} over {seconds:g}s"


def _sleep_until(moment: float) -> None:
    left = moment - time.monotonic()
    if left > 0:
        time.sleep(left)
