"""A gate is a Prefect pause that waits for a typed decision.

The flow calls `await_gate` where the plan puts a gate. The run pauses with
`ApprovalInput` as its input, so the Prefect UI shows a form; the Slack listener and the
`canary approve/reject` commands resume it through the Prefect API with the same input.

Two Prefect Variables per gate carry what must outlive one process:
  canary-gate-<run id>-<gate>       the open request (approvers, initiator, status), read by
                                    the listener and the CLI to judge a decision;
  canary-decision-<release>-<gate>  the decision, so a resumed release does not ask again.
`canary-abort-<run id>` asks a run to stop at its next step.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Callable, Collection
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal
from uuid import UUID

import httpx
from prefect.input import RunInput
from pydantic import BaseModel, Field

from canary.approvals.spec import Approvers, Gate
from canary.variables import ABORT_PREFIX, DECISION_PREFIX, GATE_PREFIX, load, store, var_name

if TYPE_CHECKING:
    from canary.notify import Notifier
    from canary.plan import ReleasePlan

log = logging.getLogger(__name__)

Members = Callable[[str], Collection[str]]
"""Resolves a Slack user group id to the ids of its members."""

Decision = Literal["approved", "rejected", "timed-out", "aborted", "cancelled"]
Interrupted = Literal["aborted", "cancelled"]
# How soon a paused gate sees a decision or a cancellation (a decision must act within 2 s),
# and how soon `canary abort` (a Variable, read less often: it is rarely asked).
PAUSE_POLL_S = 0.5
ABORT_POLL_S = 2.0
_PAUSE_KEY = re.compile(r"^gate-(?P<gate>.+?)(?:-r(?P<attempt>\d+))?$")


class ApprovalInput(RunInput):
    """Approve or reject this release gate."""

    decision: Literal["approve", "reject"] = Field(description="approve or reject")
    approver: str = Field(description="Your Slack member id (U…), as the plan's approvers list")
    reason: str = Field("", description="Why; shown in the release's log and Slack thread")


class GateContext(BaseModel):
    """What a gate needs to know about the release it stands in."""

    release_id: str
    service: str
    namespace: str = "default"
    stable_version: str
    canary_version: str
    canary_weight: int | None = None
    initiator: str | None = Field(None, description="Who started the release (four-eyes).")

    @classmethod
    def from_plan(
        cls,
        plan: ReleasePlan,
        release_id: str,
        *,
        initiator: str | None = None,
        canary_weight: int | None = None,
    ) -> GateContext:
        return cls(
            release_id=release_id,
            service=plan.service,
            namespace=plan.namespace,
            stable_version=plan.stable.version,
            canary_version=plan.canary.version,
            canary_weight=canary_weight,
            initiator=initiator,
        )


class GateOutcome(BaseModel):
    """How a gate ended; `proceed` says whether the release goes on."""

    gate: str
    decision: Decision
    proceed: bool
    approver: str | None = None
    reason: str = ""
    message: str
    decided_at: datetime = Field(default_factory=lambda: datetime.now(UTC))


class Verified(BaseModel):
    """A decision already judged by the listener or the CLI before they resumed the run."""

    approver: str
    decision: Literal["approve", "reject"]


class GateRequest(BaseModel):
    """The open gate of one flow run, as stored for the listener and the CLI."""

    run_id: str
    release_id: str
    gate: str
    title: str
    approvers: Approvers
    four_eyes: bool = False
    initiator: str | None = None
    pause_key: str
    attempt: int = 1
    deadline: datetime
    status: Literal["waiting", "approved", "rejected", "timed-out", "aborted", "cancelled"] = (
        "waiting"
    )
    decided_by: str | None = None
    reason: str = ""
    decided_at: datetime | None = None
    verified: Verified | None = None
    note: str = ""


class DecisionError(Exception):
    """A decision that cannot be applied; the message is one line for a human."""


class AlreadyDecided(DecisionError):
    pass


class NotAllowed(DecisionError):
    pass


# --- storage in Prefect Variables ------------------------------------------------------


def gate_request(run_id: str, gate: str) -> GateRequest | None:
    value = load(var_name(GATE_PREFIX, str(run_id), gate))
    return GateRequest.model_validate(value) if value else None


def save_request(request: GateRequest) -> None:
    store(var_name(GATE_PREFIX, request.run_id, request.gate), request.model_dump(mode="json"))


def gate_already_decided(release_id: str, gate: str) -> GateOutcome | None:
    """The recorded decision of this release's gate, if it was decided before."""
    value = load(var_name(DECISION_PREFIX, release_id, gate))
    return GateOutcome.model_validate(value) if value else None


def _record_decision(release_id: str, outcome: GateOutcome) -> None:
    store(var_name(DECISION_PREFIX, release_id, outcome.gate), outcome.model_dump(mode="json"))


def request_abort(run_id: str, who: str = "") -> None:
    """Ask a release to stop at its next step; it rolls back."""
    at = datetime.now(UTC).isoformat()
    store(var_name(ABORT_PREFIX, str(run_id)), {"by": who, "at": at})


def abort_requested(run_id: str) -> bool:
    return bool(load(var_name(ABORT_PREFIX, str(run_id))))


def _abort_by(run_id: str) -> str:
    value = load(var_name(ABORT_PREFIX, str(run_id))) or {}
    return value.get("by") or "someone"


# --- who may decide ---------------------------------------------------------------------


def refusal(request: GateRequest, who: str, decision: str, members: Members | None) -> str | None:
    """Why `who` may not take `decision` at this gate, or None if they may."""
    who = who.strip()
    if not who:
        return "the approver is not named"
    if request.four_eyes and decision == "approve" and who == request.initiator:
        return f"{who} started this release; four-eyes needs someone else to approve"
    if request.approvers.anyone or who in request.approvers.users:
        return None
    for group in request.approvers.groups:
        if members is None:
            continue
        try:
            if who in members(group):
                return None
        except Exception as exc:  # a Slack outage must not approve anything
            log.warning("cannot read members of %s: %s", group, exc)
    return f"{who} is not an approver of {request.title}"


def paused_gate(state: Any) -> str | None:
    """The gate key a Paused state waits at, from its pause key."""
    if state is None or not state.is_paused():
        return None
    match = _PAUSE_KEY.fullmatch(state.state_details.pause_key or "")
    return match["gate"] if match else None


def _pause_key(gate: str, attempt: int) -> str:
    return f"gate-{gate}" if attempt == 1 else f"gate-{gate}-r{attempt}"


# --- deciding from outside the run (listener, CLI, demo) -------------------------------


def decide(
    run_id: str,
    decision: Literal["approve", "reject"],
    who: str,
    *,
    gate: str | None = None,
    reason: str = "",
    members: Members | None = None,
    check: bool = True,
) -> GateRequest:
    """Resume a run paused at a gate with a decision, after judging who takes it.

    `check=False` skips the approver rules (the demo's automatic approvals); the flow
    accepts the decision because it is recorded as verified before the run resumes.
    """
    from prefect.exceptions import FlowPauseTimeout, NotPausedError
    from prefect.flow_runs import resume_flow_run

    state = flow_run_state(run_id)
    at = paused_gate(state)
    request = gate_request(run_id, gate or at or "")
    if request is None:
        raise DecisionError(f"run {run_id} has no gate {gate or ''}".rstrip())
    if request.status != "waiting":
        raise AlreadyDecided(describe_decision(request))
    if at != request.gate or state.state_details.pause_key != request.pause_key:
        now = state.name if state is not None else "no state"
        raise DecisionError(f"run {run_id} is not waiting at {request.title} ({now})")
    why = refusal(request, who, decision, members) if check else None
    if why:
        raise NotAllowed(why)
    save_request(request.model_copy(update={"verified": Verified(approver=who, decision=decision)}))
    run_input = {"decision": decision, "approver": who, "reason": reason}
    try:
        resume_flow_run(run_id, run_input=run_input, _sync=True)
    except (NotPausedError, FlowPauseTimeout) as exc:
        raise AlreadyDecided(f"{request.title} is already decided ({exc})") from None
    except RuntimeError as exc:
        raise DecisionError(f"cannot resume run {run_id}: {exc}") from None
    decided = request.model_copy(
        update={
            "status": "approved" if decision == "approve" else "rejected",
            "decided_by": who,
            "reason": reason,
            "decided_at": datetime.now(UTC),
            "verified": Verified(approver=who, decision=decision),
        }
    )
    save_request(decided)
    return decided


def describe_decision(request: GateRequest) -> str:
    if request.status == "timed-out":
        return f"{request.title} already timed out"
    if request.status == "cancelled":
        return f"{request.title}: the run was cancelled from Prefect"
    when = f" at {request.decided_at:%H:%M:%S} UTC" if request.decided_at else ""
    return f"{request.title} was already {request.status} by {request.decided_by}{when}"


def auto_approve(
    run_id: str, gate: str | None = None, who: str = "demo", timeout: float = 60.0
) -> GateRequest:
    """Wait until the run pauses at `gate` (any gate if None), then approve it as `who`."""
    deadline = time.monotonic() + timeout
    while True:
        at = paused_gate(flow_run_state(run_id))
        request = gate_request(run_id, at) if at and (gate is None or at == gate) else None
        if request is not None and request.status == "waiting":
            return decide(run_id, "approve", who, gate=at, reason="automatic", check=False)
        if time.monotonic() > deadline:
            raise DecisionError(f"run {run_id} did not pause at {gate or 'a gate'} in {timeout}s")
        time.sleep(0.2)


def flow_run_state(run_id: str) -> Any:
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            return client.read_flow_run(run_id).state
        except ObjectNotFound:
            raise DecisionError(f"no flow run {run_id}") from None


# --- the gate inside the flow ---------------------------------------------------------------


def await_gate(
    gate: Gate,
    release: GateContext,
    notifier: Notifier | None = None,
    *,
    members: Members | None = None,
    key: str | None = None,
) -> GateOutcome:
    """Pause the current flow run until the gate is decided, refused input re-pauses.

    Returns the outcome; when `outcome.proceed` is False the caller rolls back and ends the
    run with `outcome.message`. `members` resolves Slack user groups for decisions typed
    into the Prefect UI (default: the Slack Web API when SLACK_BOT_TOKEN is set). `key`
    replaces the gate's key (its pause key, stored request and recorded decision) for pauses
    that are not the plan's gates, e.g. an inconclusive analysis during a phase.
    """
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    if context is None or context.flow_run is None:
        raise RuntimeError("await_gate must be called inside a flow run")
    run_id = str(context.flow_run.id)
    if key is not None:
        gate = _KeyedGate.model_validate({**gate.model_dump(), "own_key": key})
    earlier = gate_already_decided(release.release_id, gate.key)
    if earlier is not None and earlier.proceed:
        _tell(notifier, release, gate, "approval-given", f"{earlier.message} (decided earlier)")
        return earlier
    if members is None:
        members = slack_members()
    outcome = _run_gate(gate, release, run_id, notifier, members)
    _record_decision(release.release_id, outcome)
    _tell(notifier, release, gate, _EVENT_OF[outcome.decision], outcome.message)
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


_EVENT_OF = {
    "approved": "approval-given",
    "rejected": "approval-rejected",
    "aborted": "approval-rejected",
    "cancelled": "approval-rejected",
    "timed-out": "approval-timed-out",
}


def _run_gate(
    gate: Gate, release: GateContext, run_id: str, notifier: Notifier | None, members: Members
) -> GateOutcome:
    request = _open_request(gate, release, run_id)
    _tell(notifier, release, gate, "approval-requested", _waiting_text(gate))
    while True:
        if abort_requested(run_id):
            return _close(request, _aborted(gate, run_id))
        answer = _pause(request)
        if answer is None:
            return _close(request, _timed_out(gate))
        if answer == "cancelled":
            return _close(request, _cancelled(gate))
        if answer == "aborted" or abort_requested(run_id):
            return _close(request, _aborted(gate, run_id))
        current = gate_request(run_id, gate.key) or request
        why = (
            None
            if _verified(current, answer)
            else refusal(current, answer.approver, answer.decision, members)
        )
        if why is None:
            return _close(current, _decided(gate, answer))
        _log().warning("%s: refused a decision: %s; waiting again", gate.title, why)
        request = _reopen(current, why)
        _tell(notifier, release, gate, "approval-requested", f"refused: {why}; still waiting")


def _open_request(gate: Gate, release: GateContext, run_id: str) -> GateRequest:
    previous = gate_request(run_id, gate.key)
    # A retried run has fired its earlier pause keys; the server refuses a key twice.
    attempt = previous.attempt + 1 if previous is not None else 1
    request = GateRequest(
        run_id=run_id,
        release_id=release.release_id,
        gate=gate.key,
        title=gate.title,
        approvers=gate.approvers,
        four_eyes=gate.four_eyes,
        initiator=release.initiator,
        pause_key=_pause_key(gate.key, attempt),
        attempt=attempt,
        deadline=datetime.now(UTC) + timedelta(seconds=gate.timeout),
    )
    save_request(request)
    return request


def _reopen(request: GateRequest, why: str) -> GateRequest:
    attempt = request.attempt + 1
    reopened = request.model_copy(
        update={
            "attempt": attempt,
            "pause_key": _pause_key(request.gate, attempt),
            "status": "waiting",
            "decided_by": None,
            "decided_at": None,
            "verified": None,
            "note": why,
        }
    )
    save_request(reopened)
    return reopened


def _pause(request: GateRequest) -> ApprovalInput | Interrupted | None:
    """The input the run was resumed with; None when the gate timed out.

    Prefect's `pause_flow_run` waits through a cancellation until its timeout; this wait
    also ends when the run is being cancelled from the UI, or `canary abort` asked it to
    stop, so the release rolls back at once instead of hours later.
    """
    remaining = (request.deadline - datetime.now(UTC)).total_seconds()
    if remaining <= 0:
        return None
    keyset = _enter_pause(request, max(1, math.ceil(remaining)))
    if keyset is None:
        return "cancelled"
    return _wait_for_answer(request, keyset, time.monotonic() + remaining)


def _enter_pause(request: GateRequest, timeout: int) -> dict[str, str] | None:
    """Pause the run with the decision form; None if it is being cancelled already."""
    from prefect.client.orchestration import get_client
    from prefect.input import keyset_from_paused_state
    from prefect.states import Paused

    paused = Paused(timeout_seconds=timeout, reschedule=False, pause_key=request.pause_key)
    keyset = keyset_from_paused_state(paused)
    paused.state_details.run_input_keyset = keyset
    with get_client(sync_client=True) as client:
        state = client.set_flow_run_state(request.run_id, paused).state
    if state is not None and (state.is_cancelling() or state.is_cancelled()):
        return None
    if state is None or not state.is_paused():
        raise RuntimeError(f"{request.title}: the run cannot be paused ({state})")
    ApprovalInput.save(keyset, flow_run_id=UUID(request.run_id))  # the UI's form
    _log().info("%s: paused until a decision, at most %ss", request.title, timeout)
    return keyset


def _wait_for_answer(
    request: GateRequest, keyset: dict[str, str], deadline: float
) -> ApprovalInput | Interrupted | None:
    next_abort_check = time.monotonic() + ABORT_POLL_S
    while time.monotonic() < deadline:
        time.sleep(PAUSE_POLL_S)
        try:
            state = flow_run_state(request.run_id)
            if state is not None and state.is_running():
                return _answer(keyset, request.run_id)
            if state is not None and (state.is_cancelling() or state.is_cancelled()):
                return "cancelled"
            if time.monotonic() >= next_abort_check:
                next_abort_check = time.monotonic() + ABORT_POLL_S
                if abort_requested(request.run_id):
                    return "aborted"
        except (httpx.HTTPError, OSError) as exc:  # the Prefect API blinked: keep waiting
            _log().warning("%s: cannot read the run's state: %s", request.title, exc)
    return None


def _answer(keyset: dict[str, str], run_id: str) -> ApprovalInput:
    from pydantic import ValidationError

    try:
        return ApprovalInput.load(keyset, flow_run_id=UUID(run_id))
    except ValidationError:  # resumed without the form: a decision nobody made
        return ApprovalInput(decision="reject", approver="", reason="resumed without a decision")


def _verified(request: GateRequest, answer: ApprovalInput) -> bool:
    v = request.verified
    return v is not None and (v.approver, v.decision) == (answer.approver, answer.decision)


def _close(request: GateRequest, outcome: GateOutcome) -> GateOutcome:
    if outcome.decision in ("timed-out", "aborted"):
        _resume_after_timeout(request.run_id, outcome.message)
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


def _resume_after_timeout(run_id: str, message: str) -> None:
    """Put the run back to Running so the rollback runs and the final state is ours.

    After a pause times out the server keeps the run Paused, or fails it with "paused and
    never resumed"; neither would say which gate timed out.
    """
    from prefect.client.orchestration import get_client
    from prefect.states import Running

    with get_client(sync_client=True) as client:
        state = client.read_flow_run(run_id).state
        if state is not None and not state.is_running():
            client.set_flow_run_state(run_id, Running(message=message), force=True)


def _decided(gate: Gate, answer: ApprovalInput) -> GateOutcome:
    who, reason = answer.approver.strip(), answer.reason.strip()
    if answer.decision == "approve":
        message = f"{gate.title} approved by {who}" + (f": {reason}" if reason else "")
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
    who = _abort_by(run_id)
    return GateOutcome(
        gate=gate.key,
        decision="aborted",
        proceed=False,
        approver=who,
        reason="abort requested",
        message=f"abort requested by {who} at {gate.title}",
    )


def _waiting_text(gate: Gate) -> str:
    a = gate.approvers
    who = (
        "anyone"
        if a.anyone
        else ", ".join([*(f"<@{u}>" for u in a.users), *(f"<!subteam^{g}>" for g in a.groups)])
    )
    eyes = "; the initiator may not approve" if gate.four_eyes else ""
    return f"{gate.title}: waiting up to {gate.timeout_text} for {who}{eyes}"


def _tell(
    notifier: Notifier | None, release: GateContext, gate: Gate, kind: str, message: str
) -> None:
    from canary.events import EventKind, ReleaseEvent

    event = ReleaseEvent(
        release_id=release.release_id,
        service=release.service,
        namespace=release.namespace,
        stable_version=release.stable_version,
        canary_version=release.canary_version,
        kind=EventKind(kind),
        phase=gate.before,
        gate=gate.key,
        canary_weight=release.canary_weight,
        message=message,
    )
    try:
        (notifier or _current_notifier()).notify(event)
    except Exception as exc:  # telling people must never decide the gate
        _log().warning("notifying %s failed: %s", kind, exc)


def _current_notifier() -> Notifier:
    from canary.notify import current_notifier

    return current_notifier()


def slack_members() -> Members:
    from canary.notify.slack import group_members, slack_client_from_env

    client = slack_client_from_env()
    return (lambda group: group_members(client, group)) if client is not None else _no_members


def _no_members(group: str) -> Collection[str]:
    raise LookupError("Slack is not configured; user groups cannot be resolved")


def _log() -> logging.Logger | logging.LoggerAdapter:
    from prefect.exceptions import MissingContextError
    from prefect.logging import get_run_logger

    try:
        return get_run_logger()
    except MissingContextError:
        return log


__all__ = [
    "AlreadyDecided",
    "ApprovalInput",
    "DecisionError",
    "GateContext",
    "GateOutcome",
    "GateRequest",
    "NotAllowed",
    "abort_requested",
    "auto_approve",
    "await_gate",
    "decide",
    "gate_already_decided",
    "request_abort",
]
