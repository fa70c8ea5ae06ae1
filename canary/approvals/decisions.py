"""Deciding a gate from outside its run: the Slack listener, `canary approve|reject`, the demo.

A decision is judged (the approvers' rules, four-eyes) before the paused run is resumed
with it; the run accepts it because it is recorded as verified first.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import ValidationError

from canary.approvals.pause import ApprovalInput, paused_gate
from canary.approvals.policy import Members, refusal
from canary.approvals.store import GateRequest, Verified, gate_request, save_request
from canary.errors import BadInput
from canary.prefect_runs import NoSuchRun, run_state


class DecisionError(BadInput):
    """A decision that cannot be applied; the message is one line for a human."""


class AlreadyDecided(DecisionError):
    pass


class NotAllowed(DecisionError):
    pass


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

    run_input = _input(decision, who, reason)
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
    verified = Verified(approver=who, decision=decision)
    save_request(request.model_copy(update={"verified": verified}))
    try:
        resume_flow_run(run_id, run_input=run_input.model_dump(), _sync=True)
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
            "verified": verified,
        }
    )
    save_request(decided)
    return decided


def _input(decision: str, who: str, reason: str) -> ApprovalInput:
    try:
        return ApprovalInput(decision=decision, approver=who, reason=reason)
    except ValidationError as exc:
        problem = exc.errors()[0]
        field = ".".join(str(part) for part in problem["loc"])
        raise DecisionError(f"{field}: {problem['msg']}") from None


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
    try:
        return run_state(run_id)
    except NoSuchRun as exc:
        raise DecisionError(str(exc)) from None
