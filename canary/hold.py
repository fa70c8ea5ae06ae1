"""The hold: watch the canary for a phase's hold, one round each analysis interval.

Rolls back after `analysis.threshold` failed rounds in a row, or `failure_limit` failed
rounds in all, or when metric analysis says so; ends only after a healthy round. What a
round checks is canary.round_checks. Operators may pause the hold (its countdown stops,
its rounds go on) or end it now (promote): canary.control.holding.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from canary.events import EventKind
from canary.ownership import checkpoint, guarded_by
from canary.planner import Phase
from canary.release import Release, emit
from canary.round_checks import HealthCheckFailed, check_round, publish_analysis

if TYPE_CHECKING:
    from canary.control.holding import HoldControl


def hold(release: Release, phase: Phase) -> None:
    """Watch the canary for `phase.hold` seconds; raises HealthCheckFailed to roll back.

    A pending round (metric analysis holding) keeps the hold going, at most
    `_undecided_limit` seconds past its end.
    """
    operator = operator_controls(release, phase)
    try:
        _hold(release, phase, operator)
    except BaseException:
        if operator is not None:
            operator.close(failed=True)
        raise
    else:
        if operator is not None:
            operator.close()
    finally:
        publish_analysis(release, phase)


def operator_controls(release: Release, phase: Phase) -> HoldControl | None:
    """The operators' controls of this hold; None when no operator can reach it."""
    guarded = guarded_by(release.release_id)
    if guarded is None or not guarded.control.active:
        return None
    from canary.control.holding import HoldControl

    return HoldControl(guarded.control, phase).begin()


def _hold(release: Release, phase: Phase, operator: HoldControl | None = None) -> None:
    analysis = release.plan.analysis
    deadline = time.monotonic() + phase.hold
    rounds = failed_in_row = failed_in_all = 0
    planned = time.monotonic()
    while True:
        planned = _next_round(planned, analysis.interval, deadline, first=rounds == 0)
        if _sleep_until(planned, operator):
            return  # an operator ended the hold (promote)
        checkpoint(release)  # `canary abort`, a cancellation or a lost lease: roll back now
        # The round at the deadline, or past it, is told so: an analysis still undecided
        # then asks a person instead of holding on.
        checks = check_round(release, phase, hold_ending=planned >= deadline)
        # A person's time to answer is neither watching time nor "undecided" time past the
        # hold's end: the deadline moves by it, and by the time an operator paused the hold.
        deadline += sum(c.waited for c in checks) + _paused_time(operator)
        rounds += 1
        failed = [c for c in checks if not c.passed and not c.pending]
        pending = [c for c in checks if c.pending]
        failed_in_row = failed_in_row + 1 if failed else 0
        failed_in_all += bool(failed)
        if failed:
            message = "; ".join(c.line() for c in failed)
            emit(release, EventKind.ANALYSIS, phase.name, decision="fail", message=message)
            if failed_in_row >= analysis.threshold or failed_in_all >= analysis.failure_limit:
                # No phase name here: the rollback names the phase that failed.
                raise HealthCheckFailed(
                    f"unhealthy in {failed_in_all} of {rounds} rounds: {message}"
                )
        elif pending:
            # From the round's planned time: a slow round (the analysis starting cold, a busy
            # Prometheus) does not use up the rounds the analysis has past the hold.
            over = planned - deadline
            if over >= _undecided_limit(release):
                message = "; ".join(c.line() for c in pending)
                raise HealthCheckFailed(f"analysis undecided {over:.0f}s past the hold: {message}")
        elif time.monotonic() >= deadline and _may_end(operator):
            passed = _passed(rounds, phase.hold)
            emit(release, EventKind.ANALYSIS, phase.name, decision="pass", message=passed)
            return


def _undecided_limit(release: Release) -> float:
    """How long past its end a hold waits for metric analysis to make up its mind.

    As many rounds as the analysis may fail before rolling back: a canary without enough
    traffic to judge must not hold the release forever.
    """
    analysis = release.plan.analysis
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


def _sleep_until(moment: float, operator: HoldControl | None = None) -> bool:
    """Sleep until `moment`; True when an operator ends the hold meanwhile."""
    left = moment - time.monotonic()
    if operator is not None:
        return operator.wait(max(left, 0.0))
    if left > 0:
        time.sleep(left)
    return False


def _paused_time(operator: HoldControl | None) -> float:
    return operator.paused_time() if operator is not None else 0.0


def _may_end(operator: HoldControl | None) -> bool:
    """At its end, the hold claims the operators' open slot: a pause that came first wins."""
    return operator.may_end() if operator is not None else True
