"""The gate inside the flow: a Prefect pause that waits for a typed decision.

The flow calls `await_gate` where the plan puts a gate. The run pauses with
`ApprovalInput` as its input, so the Prefect UI shows a form; the Slack listener and the
`canary approve/reject` commands resume it through the Prefect API with the same input
(canary.approvals.decisions). A decision the approvers' rules refuse re-pauses the run.
"""

from __future__ import annotations

import logging
import math
import re
import time
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from uuid import UUID

import httpx
from prefect.input import RunInput
from pydantic import Field

from canary.approvals.form import form_description
from canary.approvals.policy import Members, needs_another_approval, refusal, slack_members
from canary.approvals.spec import Gate
from canary.approvals.store import (
    GateOutcome,
    GateRequest,
    gate_request,
    pause_claim,
    record_decision,
    recorded_decision,
    save_request,
)
from canary.events import EventKind, ReleaseEvent
from canary.notify import current_notifier
from canary.notify.console import run_logger
from canary.prefect_runs import run_state
from canary.release import Release
from canary.stopping import abort_requested, abort_requested_by

log = logging.getLogger(__name__)

Interrupted = Literal["aborted", "cancelled"]
# How soon a paused gate sees a decision or a cancellation, and how soon `canary abort`
# (a Variable, read less often: it is rarely asked).
PAUSE_POLL_S = 0.5
ABORT_POLL_S = 2.0
# A reason is stored with the request and the decision, in Variables of at most 5,000
# characters each.
MAX_REASON = 1000
_PAUSE_KEY = re.compile(r"^gate-(?P<gate>.+?)(?:-r(?P<attempt>\d+))?$")


class ApprovalInput(RunInput):
    """Approve or reject this release gate."""

    decision: Literal["approve", "reject"] = Field(description="approve or reject")
    approver: str = Field(description="Your Slack member id (U…), as the plan's approvers list")
    reason: str = Field(
        "", max_length=MAX_REASON, description="Why; shown in the release's log and Slack thread"
    )


def paused_gate(state: Any) -> str | None:
    """The gate key a Paused state waits at, from its pause key."""
    if state is None or not state.is_paused():
        return None
    match = _PAUSE_KEY.fullmatch(state.state_details.pause_key or "")
    return match["gate"] if match else None


def _pause_key(gate: str, attempt: int) -> str:
    return f"gate-{gate}" if attempt == 1 else f"gate-{gate}-r{attempt}"


def await_gate(
    gate: Gate,
    release: Release,
    *,
    canary_weight: int,
    members: Members | None = None,
    key: str | None = None,
) -> GateOutcome:
    """Pause the current flow run until the gate is decided; refused input re-pauses.

    Returns the outcome; when `outcome.proceed` is False the caller rolls back and ends the
    run with `outcome.message`. `members` resolves Slack user groups for decisions typed
    into the Prefect UI (default: the Slack Web API when Slack is configured). `key`
    replaces the gate's key (its pause key, stored request and recorded decision) for pauses
    that are not the plan's gates, e.g. an inconclusive analysis during a phase.
    """
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    if context is None or context.flow_run is None:
        raise RuntimeError("await_gate must be called inside a flow run")
    asking = _Asking(gate if key is None else _keyed(gate, key), release, canary_weight)
    earlier = recorded_decision(release.release_id, asking.gate.key)
    if earlier is not None and earlier.proceed:
        asking.tell(EventKind.APPROVAL_GIVEN, f"{earlier.message} (decided earlier)")
        return earlier
    run_id = str(context.flow_run.id)
    outcome = _run_gate(asking, run_id, members or slack_members())
    record_decision(release.release_id, outcome)
    asking.tell(_EVENT_OF[outcome.decision], outcome.message)
    return outcome


class _KeyedGate(Gate):
    """A gate asked under its own key rather than its phase's.

    A plan gate's key is the phase it stands before; a pause during that phase must not
    share it, or the plan gate's recorded decision would answer it.
    """

    own_key: str = Field(exclude=True)

    @property
    def key(self) -> str:
        return self.own_key


def _keyed(gate: Gate, key: str) -> Gate:
    return _KeyedGate.model_validate({**gate.model_dump(), "own_key": key})


class _Asking:
    """The gate being asked, in its release at its weight: what events about it say."""

    def __init__(self, gate: Gate, release: Release, canary_weight: int):
        self.gate, self.release, self.canary_weight = gate, release, canary_weight

    def tell(self, kind: EventKind, message: str) -> None:
        event = ReleaseEvent(
            identity=self.release.identity,
            kind=kind,
            phase=self.gate.before,
            gate=self.gate.key,
            canary_weight=self.canary_weight,
            message=message,
        )
        try:
            current_notifier().notify(event)
        except Exception as exc:  # telling people must never decide the gate
            run_logger(log).warning("notifying %s failed: %s", kind.value, exc)


_EVENT_OF = {
    "approved": EventKind.APPROVAL_GIVEN,
    "rejected": EventKind.APPROVAL_REJECTED,
    "aborted": EventKind.APPROVAL_REJECTED,
    "cancelled": EventKind.APPROVAL_REJECTED,
    "timed-out": EventKind.APPROVAL_TIMED_OUT,
}


def _run_gate(asking: _Asking, run_id: str, members: Members) -> GateOutcome:
    """Ask until the gate is decided; the run writes how it ended, and nobody else does."""
    gate = asking.gate
    request = _open_request(asking, run_id)
    asking.tell(EventKind.APPROVAL_REQUESTED, _waiting_text(gate, request))
    while True:
        if abort_requested(run_id):
            return _close(request, _aborted(gate, run_id))
        answer = _pause(
            request, form_description(gate, request, asking.release, asking.canary_weight)
        )
        if answer is None:
            return _close(request, _timed_out(gate))
        if answer == "cancelled":
            return _close(request, _cancelled(gate))
        if answer == "aborted" or abort_requested(run_id):
            return _close(request, _aborted(gate, run_id))
        who = answer.approver.strip()
        why = None if _claimed(request, answer) else refusal(request, who, answer.decision, members)
        if why is not None:
            run_logger(log).warning("%s: refused a decision: %s; waiting again", gate.title, why)
            request = _reopen(request, f"refused: {why}")
            asking.tell(EventKind.APPROVAL_REQUESTED, f"refused: {why}; still waiting")
        elif answer.decision == "approve" and needs_another_approval(request, who):
            note = f"approved by {who} (1 of 2): four-eyes needs a second, different approver"
            request = _reopen(request, note, approved_by=[*request.approved_by, who])
            asking.tell(EventKind.APPROVAL_REQUESTED, f"{note}; still waiting")
        else:
            return _close(request, _decided(gate, answer, request.approved_by))


def _open_request(asking: _Asking, run_id: str) -> GateRequest:
    gate = asking.gate
    previous = gate_request(run_id, gate.key)
    # A retried run has fired its earlier pause keys; the server refuses a key twice.
    attempt = previous.attempt + 1 if previous is not None else 1
    request = GateRequest(
        run_id=run_id,
        release_id=asking.release.release_id,
        gate=gate.key,
        title=gate.title,
        approvers=gate.approvers,
        four_eyes=gate.four_eyes,
        initiator=asking.release.initiator,
        pause_key=_pause_key(gate.key, attempt),
        attempt=attempt,
        deadline=datetime.now(UTC) + timedelta(seconds=gate.timeout),
    )
    save_request(request)
    return request


def _reopen(request: GateRequest, note: str, approved_by: list[str] | None = None) -> GateRequest:
    attempt = request.attempt + 1
    reopened = request.model_copy(
        update={
            "attempt": attempt,
            "pause_key": _pause_key(request.gate, attempt),
            "status": "waiting",
            "decided_by": None,
            "decided_at": None,
            "approved_by": request.approved_by if approved_by is None else approved_by,
            "note": note,
        }
    )
    save_request(reopened)
    return reopened


def _pause(request: GateRequest, description: str) -> ApprovalInput | Interrupted | None:
    """The input the run was resumed with; None when the gate timed out.

    Prefect's `pause_flow_run` waits through a cancellation until its timeout; this wait
    also ends when the run is being cancelled from the UI, or `canary abort` asked it to
    stop, so the release rolls back at once instead of hours later.
    """
    remaining = (request.deadline - datetime.now(UTC)).total_seconds()
    if remaining <= 0:
        return None
    keyset = _enter_pause(request, max(1, math.ceil(remaining)), description)
    if keyset is None:
        return "cancelled"
    return _wait_for_answer(request, keyset, time.monotonic() + remaining)


def _enter_pause(request: GateRequest, timeout: int, description: str) -> dict[str, str] | None:
    """Pause the run with the decision form; None if it is being cancelled already.

    The form's description (markdown, shown above it in the Prefect UI) says what is
    being decided, by whom, until when, and why the gate asks again.
    """
    keyset = enter_pause(request.run_id, request.pause_key, timeout, ApprovalInput, description)
    if keyset is not None:
        run_logger(log).info("%s: paused until a decision, at most %ss", request.title, timeout)
    return keyset


def enter_pause(
    run_id: str, pause_key: str, timeout: int | None, form: type[RunInput], description: str
) -> dict[str, str] | None:
    """Set the run Paused under `pause_key` with `form` as its Resume form (None: no limit).

    Returns the pause's run input keyset, or None if the run is being cancelled already.
    The description is markdown the Prefect UI shows above the form's fields.
    """
    from prefect.client.orchestration import get_client
    from prefect.input import keyset_from_paused_state
    from prefect.states import Paused

    paused = Paused(timeout_seconds=timeout, reschedule=False, pause_key=pause_key)
    keyset = keyset_from_paused_state(paused)
    paused.state_details.run_input_keyset = keyset
    with get_client(sync_client=True) as client:
        state = client.set_flow_run_state(run_id, paused).state
    if state is not None and (state.is_cancelling() or state.is_cancelled()):
        return None
    if state is None or not state.is_paused():
        raise RuntimeError(f"run {run_id} cannot be paused under {pause_key} ({state})")
    form.with_initial_data(description=description).save(keyset, flow_run_id=UUID(run_id))
    return keyset


def _wait_for_answer(
    request: GateRequest, keyset: dict[str, str], deadline: float
) -> ApprovalInput | Interrupted | None:
    next_abort_check = time.monotonic() + ABORT_POLL_S
    while time.monotonic() < deadline:
        time.sleep(PAUSE_POLL_S)
        try:
            state = run_state(request.run_id)
            if state is not None and state.is_running():
                return _answer(keyset, request.run_id)
            if state is not None and (state.is_cancelling() or state.is_cancelled()):
                return "cancelled"
            if time.monotonic() >= next_abort_check:
                next_abort_check = time.monotonic() + ABORT_POLL_S
                if abort_requested(request.run_id):
                    return "aborted"
        except (httpx.HTTPError, OSError) as exc:  # the Prefect API blinked: keep waiting
            run_logger(log).warning("%s: cannot read the run's state: %s", request.title, exc)
    return None


def _answer(keyset: dict[str, str], run_id: str) -> ApprovalInput:
    from pydantic import ValidationError

    try:
        return ApprovalInput.load(keyset, flow_run_id=UUID(run_id))
    except ValidationError:  # resumed without the form: a decision nobody made
        return ApprovalInput(decision="reject", approver="", reason="resumed without a decision")


def _claimed(request: GateRequest, answer: ApprovalInput) -> bool:
    """Whether the answer is the decision the listener or the CLI judged and claimed."""
    claim = pause_claim(request.run_id, request.pause_key)
    return claim is not None and (claim.approver, claim.decision) == (
        answer.approver,
        answer.decision,
    )


def _close(request: GateRequest, outcome: GateOutcome) -> GateOutcome:
    if outcome.decision in ("timed-out", "aborted"):
        # After a pause times out the server keeps the run Paused, or fails it with "paused
        # and never resumed"; neither would say which gate timed out.
        put_back_to_running(request.run_id, outcome.message)
    save_request(
        request.model_copy(
            update={
                "status": outcome.decision,
                "decided_by": outcome.approver,
                "reason": outcome.reason,
                "decided_at": outcome.decided_at,
            }
        )
    )
    return outcome


def put_back_to_running(run_id: str, message: str) -> None:
    """Put a run that paused itself back to Running, so what follows runs and the final
    state is the release's own; a run being cancelled is left to its cancellation."""
    from prefect.client.orchestration import get_client
    from prefect.states import Running

    with get_client(sync_client=True) as client:
        state = client.read_flow_run(run_id).state
        if state is None or state.is_running() or state.is_cancelling() or state.is_cancelled():
            return
        client.set_flow_run_state(run_id, Running(message=message), force=True)


def _decided(gate: Gate, answer: ApprovalInput, approved_before: list[str]) -> GateOutcome:
    who, reason = answer.approver.strip(), answer.reason.strip()
    if answer.decision == "approve":
        everyone = " and ".join([*approved_before, who])
        message = f"{gate.title} approved by {everyone}" + (f": {reason}" if reason else "")
        return GateOutcome(
            gate=gate.key,
            decision="approved",
            proceed=True,
            approver=who,
            reason=reason,
            message=message,
        )
    message = f"{gate.title} rejected by {who}: {reason or 'no reason given'}"
    return GateOutcome(
        gate=gate.key,
        decision="rejected",
        proceed=False,
        approver=who,
        reason=reason,
        message=message,
    )


def _timed_out(gate: Gate) -> GateOutcome:
    proceed = gate.on_timeout == "proceed"
    message = f"{gate.title} timed out after {gate.timeout_text}" + (
        "; proceeding as the plan says" if proceed else ""
    )
    return GateOutcome(gate=gate.key, decision="timed-out", proceed=proceed, message=message)


def _cancelled(gate: Gate) -> GateOutcome:
    return GateOutcome(
        gate=gate.key,
        decision="cancelled",
        proceed=False,
        reason="cancelled from Prefect",
        message=f"cancelled from Prefect at {gate.title}",
    )


def _aborted(gate: Gate, run_id: str) -> GateOutcome:
    who = abort_requested_by(run_id)
    return GateOutcome(
        gate=gate.key,
        decision="aborted",
        proceed=False,
        approver=who,
        reason="abort requested",
        message=f"abort requested by {who} at {gate.title}",
    )


def _waiting_text(gate: Gate, request: GateRequest) -> str:
    a = gate.approvers
    who = (
        "anyone"
        if a.anyone
        else ", ".join([*(f"<@{u}>" for u in a.users), *(f"<!subteam^{g}>" for g in a.groups)])
    )
    eyes = ""
    if gate.four_eyes:
        eyes = (
            f"; <@{request.initiator}> started it and may not approve"
            if request.initiator
            else "; four-eyes: two different approvers"
        )
    return f"{gate.title}: waiting up to {gate.timeout_text} for {who}{eyes}"
