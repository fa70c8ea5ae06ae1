"""Gate state that must outlive a process, in Prefect Variables and flow run inputs.

canary-gate-<run id>-<gate>       the open request (approvers, initiator, status), read by
                                  the listener and the CLI to judge a decision; the run
                                  writes how it ended;
canary-decision-<release>-<gate>  the decision, so a resumed release does not ask again;
claim-<pause key> (a flow run input of the paused run)
                                  who decided this pause from outside the run. The API
                                  server keeps one input per key: the first decision to
                                  claim a pause wins, a second is told who was first.

`claim_first` is that mechanism for any key; operator actions (canary.control) claim their
decision slots with it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal, TypeVar
from uuid import UUID

import httpx
from pydantic import BaseModel, Field

from canary.approvals.spec import Approvers
from canary.prefect_variables import DECISION_PREFIX, GATE_PREFIX, load, store, var_name

GateDecision = Literal["approved", "rejected", "timed-out", "aborted", "cancelled"]


class GateOutcome(BaseModel):
    """How a gate ended; `proceed` says whether the release goes on."""

    gate: str
    decision: GateDecision
    proceed: bool
    approver: str | None = None
    reason: str = ""
    message: str
    decided_at: datetime = Field(default_factory=lambda: datetime.now(UTC))


class Claim(BaseModel):
    """A decision judged by the listener or the CLI, claiming a pause before resuming it."""

    approver: str
    decision: Literal["approve", "reject"]
    reason: str = ""
    at: datetime = Field(default_factory=lambda: datetime.now(UTC))


class Question(BaseModel):
    """What judging a decision needs (canary.approvals.policy): who may decide, four-eyes."""

    title: str
    approvers: Approvers
    four_eyes: bool = False
    initiator: str | None = None
    # Four-eyes without a known initiator: who approved so far (one is not enough).
    approved_by: list[str] = Field(default_factory=list)


class GateRequest(Question):
    """The open gate of one flow run, as stored for the listener and the CLI."""

    run_id: str
    release_id: str
    gate: str
    pause_key: str
    attempt: int = 1
    deadline: datetime
    status: Literal["waiting", "approved", "rejected", "timed-out", "aborted", "cancelled"] = (
        "waiting"
    )
    decided_by: str | None = None
    reason: str = ""
    decided_at: datetime | None = None
    note: str = ""  # why the gate asks again: a refused decision, a first approval


def gate_request(run_id: str, gate: str) -> GateRequest | None:
    value = load(var_name(GATE_PREFIX, str(run_id), gate))
    return GateRequest.model_validate(value) if value else None


def save_request(request: GateRequest) -> None:
    store(var_name(GATE_PREFIX, request.run_id, request.gate), request.model_dump(mode="json"))


def recorded_decision(release_id: str, gate: str) -> GateOutcome | None:
    """The recorded decision of this release's gate, if it was decided before."""
    value = load(var_name(DECISION_PREFIX, release_id, gate))
    return GateOutcome.model_validate(value) if value else None


def record_decision(release_id: str, outcome: GateOutcome) -> None:
    store(var_name(DECISION_PREFIX, release_id, outcome.gate), outcome.model_dump(mode="json"))


# --- claims: one decision per pause ---------------------------------------------------------


class ClaimTaken(Exception):
    """Another decision claimed the pause first; `claim` is that one."""

    def __init__(self, claim: Claim):
        super().__init__(f"{claim.decision} by {claim.approver}")
        self.claim = claim


def claim_key(pause_key: str) -> str:
    return f"claim-{pause_key}"


def claim_pause(run_id: str, pause_key: str, claim: Claim) -> None:
    """Claim the pause for `claim`; ClaimTaken when a decision claimed it first."""
    first = claim_first(run_id, claim_key(pause_key), claim)
    if first is not None:
        raise ClaimTaken(first)


def pause_claim(run_id: str, pause_key: str) -> Claim | None:
    """The decision that claimed the pause, if one did."""
    return read_claim(run_id, claim_key(pause_key), Claim)


def release_claim(run_id: str, pause_key: str) -> None:
    """Drop a claim whose decision did not resume the run (someone resumed it first)."""
    drop_claim(run_id, claim_key(pause_key))


# --- any key: the first to create it wins -------------------------------------------------

ClaimT = TypeVar("ClaimT", bound=BaseModel)


def claim_first(run_id: str, key: str, claim: ClaimT) -> ClaimT | None:
    """Store `claim` as the run's input `key`: None if it was stored, else the first claim.

    The API server refuses a second input under one key (409), so of two claims made at
    once exactly one is stored.
    """
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        try:
            client.create_flow_run_input(UUID(run_id), key, claim.model_dump_json())
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code != httpx.codes.CONFLICT:
                raise
            return _read(client, run_id, key, type(claim)) or claim
    return None


def read_claim(
    run_id: str, key: str, model: type[ClaimT], client: Any | None = None
) -> ClaimT | None:
    """The claim stored under the run's input `key`, if there is one.

    `client`: an open sync Prefect client to read with (a poller's own), else a new one.
    """
    from prefect.client.orchestration import get_client

    if client is not None:
        return _read(client, run_id, key, model)
    with get_client(sync_client=True) as client:
        return _read(client, run_id, key, model)


def drop_claim(run_id: str, key: str) -> None:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        try:
            client.delete_flow_run_input(UUID(run_id), key)
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code != httpx.codes.NOT_FOUND:
                raise


def _read(client: Any, run_id: str, key: str, model: type[ClaimT]) -> ClaimT | None:
    try:
        value = client.read_flow_run_input(UUID(run_id), key)
    except httpx.HTTPStatusError as exc:
        if exc.response.status_code == httpx.codes.NOT_FOUND:
            return None
        raise
    return model.model_validate_json(value)
