"""Deciding a gate from outside its run: the Slack listener, `canary approve|reject`, the demo.

A decision is judged (the approvers' rules, four-eyes), then claims the pause (canary.
approvals.store: the first claim wins, so two people clicking at once get one decision),
then resumes the run with it. The run accepts a claimed decision as judged, and it alone
writes how the gate ended: the record, the release's events and the Slack thread all
come from there.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, ValidationError

from canary.approvals.pause import ApprovalInput, paused_gate
from canary.approvals.policy import Members, needs_another_approval, refusal
from canary.approvals.store import (
    Claim,
    ClaimTaken,
    GateRequest,
    claim_pause,
    gate_request,
    pause_claim,
    release_claim,
)
from canary.errors import BadInput
from canary.prefect_runs import NoSuchRun, run_state


class DecisionError(BadInput):
    """A decision that cannot be applied; the message is one line for a human."""


class AlreadyDecided(DecisionError):
    pass


class NotAllowed(DecisionError):
    pass


class Decided(BaseModel):
    """A decision that resumed its run."""

    run_id: str
    gate: str
    title: str
    claim: Claim
    # Four-eyes without a known initiator: this was the first of two approvals.
    first_of_two: bool = False

    @property
    def status(self) -> str:
        done = "approved" if self.claim.decision == "approve" else "rejected"
        return f"{done} (1 of 2)" if self.first_of_two else done


def decide(
    run_id: str,
    decision: Literal["approve", "reject"],
    who: str,
    *,
    gate: str | None = None,
    reason: str = "",
    members: Members | None = None,
    check: bool = True,
) -> Decided:
    """Resume a run paused at a gate with a decision, after judging who takes it.

    `check=False` skips the approver rules (the demo's automatic approvals).
    """
    run_input = _input(decision, who, reason)
    request = _waiting_request(run_id, gate)
    why = refusal(request, who, decision, members) if check else None
    if why:
        raise NotAllowed(why)
    claim = Claim(approver=who, decision=decision, reason=reason)
    try:
        claim_pause(run_id, request.pause_key, claim)
    except ClaimTaken as taken:
        raise AlreadyDecided(_first(request, taken.claim)) from None
    if not _resume(run_id, run_input):
        release_claim(run_id, request.pause_key)
        raise AlreadyDecided(f"{request.title} was decided meanwhile, in the Prefect UI")
    first_of_two = decision == "approve" and needs_another_approval(request, who)
    return Decided(
        run_id=run_id,
        gate=request.gate,
        title=request.title,
        claim=claim,
        first_of_two=first_of_two,
    )


def _waiting_request(run_id: str, gate: str | None) -> GateRequest:
    """The request of the gate the run waits at now; DecisionError when it waits at none."""
    state = flow_run_state(run_id)
    at = paused_gate(state)
    request = gate_request(run_id, gate or at or "")
    if request is None:
        raise DecisionError(f"run {run_id} has no gate {gate or ''}".rstrip())
    if request.status != "waiting":
        raise AlreadyDecided(describe_decision(request))
    claim = pause_claim(run_id, request.pause_key)
    if claim is not None:  # decided a moment ago; the run has not written it down yet
        raise AlreadyDecided(_first(request, claim))
    if at != request.gate or state.state_details.pause_key != request.pause_key:
        now = state.name if state is not None else "no state"
        raise DecisionError(f"run {run_id} is not waiting at {request.title} ({now})")
    return request


def _resume(run_id: str, run_input: ApprovalInput) -> bool:
    """Resume the run with the decision; False when it was no longer paused."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.responses import SetStateStatus

    with get_client(sync_client=True) as client:
        result = client.resume_flow_run(UUID(run_id), run_input=run_input.model_dump())
    if result.status is SetStateStatus.ACCEPT:
        return True
    if result.status is SetStateStatus.ABORT:  # resumed, cancelled or timed out meanwhile
        return False
    if result.state is not None and result.state.is_failed():
        raise AlreadyDecided(f"run {run_id} can no longer be resumed ({result.state.name})")
    reason = result.details.reason if result.details else result.status.value
    raise DecisionError(f"cannot resume run {run_id}: {reason}")


def _first(request: GateRequest, claim: Claim) -> str:
    done = "approved" if claim.decision == "approve" else "rejected"
    return f"{request.title} was already {done} by {claim.approver} at {claim.at:%H:%M:%S} UTC"


def _input(decision: str, who: str, reason: str) -> ApprovalInput:
    try:
        return ApprovalInput(decision=decision, approver=who, reason=reason)
    except ValidationError as exc:
        problem = exc.errors()[0]
        field = ".".join(str(part) for part in problem["loc"])
        raise DecisionError(f"{field}: {problem['msg']}") from None


def abort(run_id: str, who: str) -> None:
    """Ask a running release to stop and roll back (`canary abort`, the Abort button)."""
    from canary.stopping import request_abort

    state = flow_run_state(run_id)
    if state is not None and state.is_final():
        raise DecisionError(f"run {run_id} has already ended ({state.name})")
    request_abort(run_id, who)
    gate = paused_gate(state)
    if gate is not None:  # a run waiting at a gate would not see the request until decided
        with contextlib.suppress(AlreadyDecided):
            decide(run_id, "reject", who, gate=gate, reason="abort requested", check=False)


def describe_decision(request: GateRequest) -> str:
    if request.status == "timed-out":
        return f"{request.title} already timed out"
    if request.status == "cancelled":
        return f"{request.title}: the run was cancelled from Prefect"
    when = f" at {request.decided_at:%H:%M:%S} UTC" if request.decided_at else ""
    return f"{request.title} was already {request.status} by {request.decided_by}{when}"


def auto_approve(
    run_id: str, gate: str | None = None, who: str = "demo", timeout: float = 60.0
) -> Decided:
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
    try:
        return run_state(run_id)
    except NoSuchRun as exc:
        raise DecisionError(str(exc)) from None
