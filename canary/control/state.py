"""What operators act on, kept where the CLI, the listener and the run can all read it.

canary-control-<run id>   (a Prefect Variable) the run's control record, written by the run
                          alone: its open decision slot, the hold running now, a pause,
                          and how the release ended;
operator-<n>              (a flow run input of the run) who decided decision slot n, and
                          what. The API server keeps one input per key: the first claim
                          of a slot decides it, a second is told who was first. The run
                          claims a slot itself when a hold ends or the release rolls back,
                          so a request that comes too late is told so, never lost;
operator-retry            (a flow run input of a run that has ended) who retried it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from canary.approvals.store import Question, claim_first, read_claim
from canary.prefect_variables import CONTROL_PREFIX, load, store, var_name
from canary.release import Outcome

# What an operator may ask of a running release.
OperatorAction = Literal["pause", "resume", "promote", "promote-full"]
# What decides a slot: an operator's request, or the run itself (a hold that ended, a
# rollback); and the retry of an ended run.
SlotAction = Literal[
    "pause", "resume", "promote", "promote-full", "hold-ended", "rolling-back", "retry"
]
MAX_REASON = 1000  # as a gate decision's reason
RETRY_KEY = "operator-retry"


def _now() -> datetime:
    return datetime.now(UTC)


class SlotClaim(BaseModel):
    """Who decided one decision slot of a release run, and what."""

    action: SlotAction
    by: str = ""
    reason: str = Field("", max_length=MAX_REASON)
    at: datetime = Field(default_factory=_now)
    phase: str | None = None  # the hold it was decided in

    def decided(self) -> str:
        """What a request that came second is told."""
        when = f"{self.at:%H:%M:%S} UTC"
        if self.action == "rolling-back":
            return f"the release is rolling back already: {self.reason}"
        if self.action == "hold-ended":
            return f"already decided: the hold of {self.phase} ended at {when}"
        if self.action == "retry":
            return f"already retried by {self.by} at {when}"
        done = {
            "pause": "paused",
            "resume": "resumed",
            "promote": "promoted",
            "promote-full": "promoted to the end (promote --full)",
        }[self.action]
        return f"already decided: {done} by {self.by} at {when}"


class PauseRecord(BaseModel):
    """An operator's pause in force."""

    by: str
    reason: str = ""
    at: datetime
    phase: str
    canary_weight: int
    pause_key: str
    until: datetime | None = None  # pause.maxDuration: then it rolls back


class ControlRecord(Question):
    """A release run as operators see it. As a Question: who may act on it.

    `approved_by` holds who approved a full promotion so far (four-eyes without a named
    initiator needs two).
    """

    run_id: str
    release_id: str
    versions: str  # `reviews v1->v2`
    slot: int = 1
    holding: str | None = None  # the phase whose hold runs now
    canary_weight: int | None = None
    paused: PauseRecord | None = None
    rolling_back: str | None = None  # why, once the release rolls back
    outcome: Outcome | None = None
    reason: str = ""  # how it ended
    retry_of: str | None = None

    def full_promotion(self) -> Question:
        """The question `promote --full` answers: under four-eyes, always."""
        return Question(
            title=f"a full promotion of {self.versions}",
            approvers=self.approvers,
            four_eyes=True,
            initiator=self.initiator,
            approved_by=self.approved_by,
        )


def operator_title(versions: str) -> str:
    return f"operator actions on {versions}"


def load_record(run_id: str) -> ControlRecord | None:
    value = load(var_name(CONTROL_PREFIX, str(run_id)))
    return ControlRecord.model_validate(value) if value else None


def save_record(record: ControlRecord) -> None:
    store(var_name(CONTROL_PREFIX, record.run_id), record.model_dump(mode="json"))


def slot_key(slot: int) -> str:
    return f"operator-{slot}"


def claim_slot(run_id: str, slot: int, claim: SlotClaim) -> SlotClaim | None:
    """Claim decision slot `slot`: None when this claim decides it, else the one that did."""
    return claim_first(run_id, slot_key(slot), claim)


def slot_claim(run_id: str, slot: int, client: Any | None = None) -> SlotClaim | None:
    return read_claim(run_id, slot_key(slot), SlotClaim, client)
