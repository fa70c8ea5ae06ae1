"""In the release run: what a hold does with operators' requests.

The hold loop (canary.hold) asks its `HoldControl`:

* `wait(seconds)`: sleep until its next round, carrying out meanwhile what operators
  decided; True when the hold must end now (a promote);
* `paused_time()`: the seconds paused since it last asked: the hold's deadline moves by
  them, so a pause stops the countdown;
* `may_end()`: at the hold's own end, claim the open decision slot, so a request that comes
  now is told the hold ended; False when an operator's pause (or promote) came first;

and `close()` when the hold is over. Paused, the run is Paused in Prefect under a pause key
of its own with a Resume form (canary.control.form), as at a gate, while the analysis
rounds go on: a failing round still rolls back. A resume from that form is judged like a
gate's decision; a refused one pauses again, saying why. `pause.maxDuration` bounds a
pause: then the release rolls back (PauseExpired).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING
from uuid import UUID

from canary.approvals.pause import enter_pause, put_back_to_running
from canary.approvals.policy import (
    approved_by_all,
    needs_another_approval,
    refusal,
    slack_members,
)
from canary.approvals.store import GateOutcome, Question, record_decision
from canary.control.form import ResumeInput, pause_description
from canary.control.state import PauseRecord, SlotClaim, claim_slot
from canary.durations import format_duration
from canary.errors import CanaryError
from canary.events import EventKind, OperatorDecision
from canary.notify.console import run_logger
from canary.planner import Phase, PhaseKind, phases
from canary.release import emit

if TYPE_CHECKING:
    from canary.control.watch import ReleaseControl

log = logging.getLogger(__name__)

# A full promotion skips these phases (and their gates) on its way to promote.
_SKIPPED_BY_FULL = (PhaseKind.HEADER_ROUTE, PhaseKind.STEP)


class PauseExpired(CanaryError):
    """A pause lasted as long as the plan allows (pause.maxDuration): the release rolls back."""


@dataclass
class _Pause:
    record: PauseRecord
    started: float  # monotonic
    limit_at: float | None  # monotonic; None: no limit
    keyset: dict[str, str] | None = None
    attempt: int = 1


class HoldControl:
    """Operators' requests during one hold of one phase."""

    def __init__(self, control: ReleaseControl, phase: Phase):
        self.control = control
        self.phase = phase
        self.release = control.release
        self.run_id = control.run_id or ""
        self.pause: _Pause | None = None
        self._paused_before = 0.0  # seconds of this hold's pauses that are over
        self._paused_told = 0.0

    # --- what the hold loop asks ------------------------------------------------------

    def begin(self) -> HoldControl:
        self.control.update(holding=self.phase.name, canary_weight=self.phase.canary_weight)
        self._follow()
        self.control.publish()
        return self

    def wait(self, seconds: float) -> bool:
        """Sleep `seconds`, acting on requests meanwhile; True when the hold must end now."""
        until = time.monotonic() + seconds
        woken = self.control.watch.woken
        while True:
            woken.clear()
            if self._act():
                return True
            self._check_limit()
            limit = self.pause.limit_at if self.pause and self.pause.limit_at else math.inf
            left = min(until, limit) - time.monotonic()
            if left <= 0:
                return False
            woken.wait(left)

    def paused_time(self) -> float:
        """Seconds paused since the last call (the ongoing pause up to now included)."""
        ongoing = time.monotonic() - self.pause.started if self.pause else 0.0
        total = self._paused_before + ongoing
        told, self._paused_told = self._paused_told, total
        return total - told

    def may_end(self) -> bool:
        """At the hold's own end: claim the open slot. False when an operator came first
        with a request that keeps the hold going (a pause)."""
        claim = SlotClaim(action="hold-ended", phase=self.phase.name)
        try:
            first = claim_slot(self.run_id, self.control.slot, claim)
        except Exception as exc:  # the Prefect API is away: operators cannot claim either
            run_logger(log).warning("cannot close the operators' slot of the hold: %s", exc)
            first = None
        if first is None:
            self.control.next_slot()
            return True
        return self._carry_out(first)

    def close(self, failed: bool = False) -> None:
        """The hold is over; a pause ends with it (the run goes back to Running)."""
        if self.pause is not None:
            self._end_pause(f"the hold of {self.phase.name} is over")
        self.control.watch.follow(None)
        if not failed:  # a rollback writes the record itself (ReleaseControl.rolling_back)
            self.control.update(holding=None, paused=None)
            self.control.publish()

    # --- carrying out -------------------------------------------------------------------

    def _act(self) -> bool:
        claim = self.control.watch.claim_at(self.control.slot)
        if claim is not None:
            return self._carry_out(claim)
        if self.pause is not None and self.control.watch.resumed(self._pause_key()):
            return self._resumed_in_the_ui()
        return False

    def _carry_out(self, claim: SlotClaim) -> bool:
        """The claim decided the open slot: do what it says; True when the hold ends."""
        slot = self.control.slot
        self.control.next_slot()
        ends = False
        if claim.action == "pause" and self.pause is None:
            self._enter(claim, slot)
        elif claim.action == "resume" and self.pause is not None:
            self._resume(claim)
        elif claim.action == "promote":
            ends = self._promote(claim)
        elif claim.action == "promote-full":
            ends = self._promote_fully(claim)
        else:  # asked on an older view of the release (resume when not paused, ...)
            run_logger(log).info("%s: not carried out, it does not apply now", claim.decided())
        self._follow()
        self.control.publish()
        return ends

    def _enter(self, claim: SlotClaim, slot: int) -> None:
        limit = self.release.plan.pause.max_duration
        at = datetime.now(UTC)
        record = PauseRecord(
            by=claim.by,
            reason=claim.reason,
            at=at,
            phase=self.phase.name,
            canary_weight=self.phase.canary_weight,
            pause_key=f"operator-pause-{slot}",
            until=at + timedelta(seconds=limit) if limit is not None else None,
        )
        started = time.monotonic()
        pause = _Pause(record, started, started + limit if limit is not None else None)
        if not self._pause_run(pause):
            return  # the run is being cancelled: the release stops at its next round
        self.pause = pause
        self.control.update(paused=record)
        self._tell(EventKind.OPERATOR_PAUSED, _paused_text(record), "operator-pause")

    def _resume(self, claim: SlotClaim) -> None:
        seconds = self._end_pause(f"resumed by {claim.by}")
        message = f"resumed by {claim.by} after {seconds:.0f}s{_because(claim.reason)}"
        self._tell(EventKind.OPERATOR_RESUMED, message, "operator-resume")

    def _promote(self, claim: SlotClaim) -> bool:
        if self.pause is not None:
            self._end_pause(f"promoted by {claim.by}")
        after = self._next_phase()
        gate = self._approve_gate(after, [claim.by])
        message = (
            f"the hold of {self.phase.name} ended by {claim.by}{_because(claim.reason)}; "
            f"on to {after}{gate}"
        )
        self._tell(EventKind.OPERATOR_PROMOTED, message, "operator-promote")
        return True

    def _promote_fully(self, claim: SlotClaim) -> bool:
        record = self.control.record
        question = record.full_promotion()
        if needs_another_approval(question, claim.by):
            self.control.update(approved_by=[*record.approved_by, claim.by])
            note = (
                f"full promotion approved by {claim.by} (1 of 2): four-eyes needs a second, "
                "different approver"
            )
            self._tell(EventKind.OPERATOR_REQUEST, note)
            return False
        people = list(dict.fromkeys([*record.approved_by, claim.by]))
        if self.pause is not None:
            self._end_pause(f"promoted by {' and '.join(people)}")
        skipped = self._skipped_by_full()
        self.control.skipping.update(skipped)
        self.control.update(approved_by=[])
        gate = self._approve_gate("promote", people)
        message = (
            f"promoted to the end by {' and '.join(people)}{_because(claim.reason)}: "
            f"skipping {', '.join(skipped) or 'no step'}, on to promote{gate}"
        )
        self._tell(EventKind.OPERATOR_PROMOTED, message, "operator-promote-full")
        return True

    def _resumed_in_the_ui(self) -> bool:
        """The Resume form was sent: judge who sent it, as a gate judges its form."""
        answer = _answer(self.pause.keyset if self.pause else None, self.run_id)
        who = answer.approver.strip() if answer is not None else ""
        why = (
            refusal(self.control.record, who, "resume", slack_members())
            if who
            else "the resume did not say who resumed"
        )
        if why is not None:
            run_logger(log).warning("%s: refused a resume: %s", self.phase.name, why)
            self._pause_again(f"refused: {why}")
            self._tell(EventKind.OPERATOR_REQUEST, f"resume refused: {why}; still paused")
            return False
        reason = answer.reason.strip() if answer is not None else ""
        claim = SlotClaim(action="resume", by=who, reason=reason, phase=self.phase.name)
        try:
            first = claim_slot(self.run_id, self.control.slot, claim)
        except Exception as exc:  # resumed all the same: the form was judged here
            run_logger(log).warning("cannot claim the operators' slot: %s", exc)
            first = None
        if first is not None and first.action in ("promote", "promote-full"):
            return self._carry_out(first)
        self.control.next_slot()
        self._resume(claim)
        self._follow()
        self.control.publish()
        return False

    # --- the Prefect pause ----------------------------------------------------------------

    def _pause_run(self, pause: _Pause, note: str = "") -> bool:
        """Set the run Paused with the Resume form; False if it is being cancelled."""
        left = None
        if pause.limit_at is not None:
            left = max(1, math.ceil(pause.limit_at - time.monotonic()))
        description = pause_description(self.release, pause.record, self.control.record, note)
        key = _attempt_key(pause.record.pause_key, pause.attempt)
        pause.keyset = enter_pause(self.run_id, key, left, ResumeInput, description)
        return pause.keyset is not None

    def _pause_again(self, note: str) -> None:
        if self.pause is None:
            return
        self.pause.attempt += 1
        self._pause_run(self.pause, note)
        self._follow()

    def _end_pause(self, message: str) -> float:
        """Back to Running; returns how long the pause lasted."""
        pause = self.pause
        if pause is None:
            return 0.0
        seconds = time.monotonic() - pause.started
        self._paused_before += seconds
        self.pause = None
        self.control.update(paused=None)
        self._follow()
        try:
            put_back_to_running(self.run_id, message)
        except Exception as exc:  # tasks run all the same; only the UI shows it Paused
            run_logger(log).warning("cannot put the run back to Running: %s", exc)
        return seconds

    def _check_limit(self) -> None:
        pause = self.pause
        if pause is None or pause.limit_at is None or time.monotonic() < pause.limit_at:
            return
        limit = format_duration(self.release.plan.pause.max_duration or 0)
        raise PauseExpired(
            f"paused by {pause.record.by} for {limit}, the longest pause.maxDuration allows"
        )

    def _pause_key(self) -> str:
        pause = self.pause
        return _attempt_key(pause.record.pause_key, pause.attempt) if pause else ""

    def _follow(self) -> None:
        self.control.watch.follow(self.control.slot, self._pause_key() or None)

    # --- where a promote leads ------------------------------------------------------------

    def _next_phase(self) -> str:
        order = [p for p in phases(self.release.plan) if not self.control.skips(p.name)]
        names = [p.name for p in order]
        at = names.index(self.phase.name)
        return names[at + 1] if at + 1 < len(names) else "the end"

    def _skipped_by_full(self) -> list[str]:
        order = phases(self.release.plan)
        names = [p.name for p in order]
        later = order[names.index(self.phase.name) + 1 :]
        return [p.name for p in later if p.kind in _SKIPPED_BY_FULL]

    def _approve_gate(self, phase_name: str, people: list[str]) -> str:
        """The gate before `phase_name` counts as approved by `people` when the plan says a
        promote by its approvers does (promoteApproves); what the event says of it."""
        gate = next(
            (g for g in self.release.plan.gates if g.before == phase_name and g.promote_approves),
            None,
        )
        if gate is None:
            return ""
        question = Question(
            title=gate.title,
            approvers=gate.approvers,
            four_eyes=gate.four_eyes,
            initiator=self.release.initiator,
        )
        if not approved_by_all(question, people, slack_members()):
            return f"; {gate.title} still waits for its approvers"
        everyone = " and ".join(people)
        outcome = GateOutcome(
            gate=gate.key,
            decision="approved",
            proceed=True,
            approver=people[-1],
            reason="promoted by an operator",
            message=f"{gate.title} approved by {everyone} (their promote)",
        )
        record_decision(self.release.release_id, outcome)
        return f"; {gate.title} approved by {everyone}"

    def _tell(
        self, kind: EventKind, message: str, decision: OperatorDecision | None = None
    ) -> None:
        emit(
            self.release,
            kind,
            self.phase.name,
            canary_weight=self.phase.canary_weight,
            decision=decision,
            message=message,
        )


def _attempt_key(key: str, attempt: int) -> str:
    return key if attempt == 1 else f"{key}-r{attempt}"


def _answer(keyset: dict[str, str] | None, run_id: str) -> ResumeInput | None:
    from pydantic import ValidationError

    if keyset is None:
        return None
    try:
        return ResumeInput.load(keyset, flow_run_id=UUID(run_id))
    except ValidationError:  # resumed without the form
        return None


def _because(reason: str) -> str:
    return f": {reason}" if reason else ""


def _paused_text(record: PauseRecord) -> str:
    until = (
        f"; it rolls back at {record.until:%H:%M:%S} UTC unless resumed (pause.maxDuration)"
        if record.until is not None
        else "; until resumed"
    )
    return (
        f"paused by {record.by} at {record.canary_weight} %{_because(record.reason)}; the "
        f"analysis goes on (a failing round still rolls back){until}"
    )
