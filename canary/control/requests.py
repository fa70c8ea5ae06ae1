"""Operators' requests from outside the run: `canary pause|resume|promote`, Slack buttons.

A request is judged first (the run running and holding a phase, the asker among the
plan's approvers; `promote --full` under four-eyes), then claims the run's open decision
slot (canary.control.state): of two requests at once only the first decides, the other
is told who was first. The run carries the claim out within a poll (canary.control.watch)
and publishes its record again; `request` waits a little for that, so that the answer
says what happened rather than what was asked.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from pydantic import BaseModel, ValidationError

from canary.approvals.policy import Members, refusal
from canary.approvals.store import Question
from canary.control.state import (
    ControlRecord,
    OperatorAction,
    SlotClaim,
    claim_slot,
    load_record,
)
from canary.errors import BadInput
from canary.prefect_runs import NoSuchRun, run_state

CARRIED_OUT_WAIT_S = 10.0  # how long `request` waits to see the run carry a claim out


class ControlError(BadInput):
    """A request that cannot be applied; the message is one line for a human."""


class AlreadyDecided(ControlError):
    pass


class NotAllowed(ControlError):
    pass


class Requested(BaseModel):
    """A request that decided its slot, and the record the run published after it (if seen)."""

    run_id: str
    slot: int
    claim: SlotClaim
    record: ControlRecord | None = None  # None: not carried out yet when `request` returned

    def summary(self) -> str:
        """One line for whoever asked."""
        verb = {
            "pause": "pause",
            "resume": "resume",
            "promote": "promote",
            "promote-full": "full promotion",
        }.get(self.claim.action, self.claim.action)
        record = self.record
        if record is None:
            return (
                f"{verb} of run {self.run_id} requested by {self.claim.by}; it acts within a round"
            )
        if record.rolling_back:
            return f"run {self.run_id} is rolling back: {record.rolling_back}"
        if self.claim.action == "pause" and record.paused is not None:
            paused = record.paused
            return (
                f"run {self.run_id} paused by {paused.by} at {paused.phase} "
                f"({paused.canary_weight} %); resume with `canary resume {self.run_id}`"
            )
        if self.claim.action == "promote-full" and self.claim.by in record.approved_by:
            return (
                f"full promotion of run {self.run_id} approved by {self.claim.by} (1 of 2): "
                "four-eyes needs a second, different approver"
            )
        at = f" (now {record.holding})" if record.holding else ""
        return f"{verb} of run {self.run_id} carried out for {self.claim.by}{at}"


def request(
    run_id: str,
    action: OperatorAction,
    who: str,
    *,
    reason: str = "",
    members: Members | None = None,
    wait: float = CARRIED_OUT_WAIT_S,
) -> Requested:
    """Judge `who`'s request, claim the run's open slot with it, and wait (at most `wait`
    seconds) until the run carried it out. ControlError (one line) when it cannot apply."""
    record = running_record(run_id)
    _applies(record, action)
    why = refusal(_question(record, action), who, "approve", members)
    if why is not None:
        raise NotAllowed(why)
    claim = _claim(action, who, reason, record.holding)
    slot = record.slot
    first = claim_slot(run_id, slot, claim)
    if first is not None:
        raise AlreadyDecided(first.decided())
    return Requested(run_id=run_id, slot=slot, claim=claim, record=_carried_out(run_id, slot, wait))


def running_record(run_id: str) -> ControlRecord:
    """The control record of a release run that is running now; ControlError otherwise."""
    try:
        state = run_state(run_id)
    except NoSuchRun as exc:
        raise ControlError(str(exc)) from None
    if state is not None and state.is_final():
        raise ControlError(f"run {run_id} has already ended ({state.name})")
    record = load_record(run_id)
    if record is None or record.outcome is not None:
        raise ControlError(f"run {run_id} is not a release operators can act on now")
    return record


def judge_abort(run_id: str, who: str, members: Members | None) -> None:
    """Whether `who` may abort the run (the Slack thread's Abort button): as for a pause."""
    record = running_record(run_id)
    why = refusal(record, who, "abort", members)
    if why is not None:
        raise NotAllowed(why)


def _applies(record: ControlRecord, action: OperatorAction) -> None:
    """ControlError when `action` does not apply to the release as it is now."""
    run = record.run_id
    if record.rolling_back:
        raise AlreadyDecided(f"the release is rolling back already: {record.rolling_back}")
    if record.holding is None:
        raise ControlError(
            f"run {run} holds no phase now: pause and promote act during a phase's hold"
        )
    paused = record.paused
    if action == "pause" and paused is not None:
        raise AlreadyDecided(f"already paused by {paused.by} at {paused.at:%H:%M:%S} UTC")
    if action == "resume" and paused is None:
        raise ControlError(f"run {run} is not paused")


def _question(record: ControlRecord, action: OperatorAction) -> Question:
    """Who may take `action`: the plan's approvers; a full promotion under four-eyes."""
    if action == "promote-full":
        return record.full_promotion()
    return record.model_copy(update={"four_eyes": False})


def _claim(action: OperatorAction, who: str, reason: str, phase: str | None) -> SlotClaim:
    try:
        return SlotClaim(action=action, by=who.strip(), reason=reason.strip(), phase=phase)
    except ValidationError as exc:
        problem = exc.errors()[0]
        field = ".".join(str(part) for part in problem["loc"])
        raise ControlError(f"{field}: {problem['msg']}") from None


def _carried_out(run_id: str, slot: int, wait: float) -> ControlRecord | None:
    """The run's record once it moved past `slot`, or None if not within `wait` seconds."""
    return _poll(lambda: _past(run_id, slot), wait)


def _past(run_id: str, slot: int) -> ControlRecord | None:
    record = load_record(run_id)
    return record if record is not None and (record.slot > slot or record.outcome) else None


def _poll(found: Callable[[], ControlRecord | None], wait: float) -> ControlRecord | None:
    deadline = time.monotonic() + wait
    while True:
        value = found()
        if value is not None or time.monotonic() >= deadline:
            return value
        time.sleep(0.2)
