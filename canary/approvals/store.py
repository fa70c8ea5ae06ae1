"""Gate state that must outlive a process, in Prefect Variables.

canary-gate-<run id>-<gate>       the open request (approvers, initiator, status), read by
                                  the listener and the CLI to judge a decision;
canary-decision-<release>-<gate>  the decision, so a resumed release does not ask again.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

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
