"""What a release tells the world: one event per transition."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from canary.identity import ReleaseIdentity

# What a check concluded. Metric analysis: continue, hold, pause, rollback (the Analyzer's
# decisions); health rounds and the test phase's checks: pass or fail.
CheckDecision = Literal["continue", "hold", "pause", "rollback", "pass", "fail"]
# What an operator did (canary.control): prefixed, so that an operator's pause and an
# analysis asking a person ("pause") stay apart in canary_release_decisions_total.
OperatorDecision = Literal[
    "operator-pause",
    "operator-resume",
    "operator-promote",
    "operator-promote-full",
    "operator-abort",
    "operator-retry",
]
Decision = CheckDecision | OperatorDecision


class EventKind(StrEnum):
    PHASE_STARTED = "phase-started"
    PHASE_FINISHED = "phase-finished"
    WEIGHT_CHANGED = "weight-changed"
    ANALYSIS = "analysis"
    APPROVAL_REQUESTED = "approval-requested"
    APPROVAL_GIVEN = "approval-given"
    APPROVAL_REJECTED = "approval-rejected"
    APPROVAL_TIMED_OUT = "approval-timed-out"
    ROLLBACK = "rollback"
    PROMOTED = "promoted"
    FAILED = "failed"
    # Operator actions (canary.control), each with its decision.
    OPERATOR_PAUSED = "operator-paused"
    OPERATOR_RESUMED = "operator-resumed"
    OPERATOR_PROMOTED = "operator-promoted"
    OPERATOR_ABORTED = "operator-aborted"
    OPERATOR_RETRIED = "operator-retried"
    # A request the run took note of without carrying it out (yet), without a decision:
    # the first of two approvals of a full promotion, a resume refused by the rules.
    OPERATOR_REQUEST = "operator-request"


OPERATOR_KINDS = frozenset(k for k in EventKind if k.value.startswith("operator-"))

# The events whose weight is what the cluster routes now (a phase's start names its target).
ROUTED_WEIGHT = frozenset({EventKind.WEIGHT_CHANGED, EventKind.PROMOTED, EventKind.ROLLBACK})


class ReleaseEvent(BaseModel):
    model_config = ConfigDict(frozen=True)

    identity: ReleaseIdentity
    kind: EventKind
    phase: str | None = None
    # Approval events: the gate's key (the phase for the plan's gates; its own for pauses
    # during a phase), which a Slack button must name to decide it.
    gate: str | None = None
    canary_weight: int | None = Field(None, ge=0, le=100)
    # Analysis events: what the check concluded; operator events: what was done.
    decision: Decision | None = None
    message: str = ""
    time: datetime = Field(default_factory=lambda: datetime.now(UTC))

    @model_validator(mode="after")
    def _analysis_decides(self) -> ReleaseEvent:
        if self.kind is EventKind.ANALYSIS and self.decision is None:
            raise ValueError("an analysis event carries its decision")
        return self

    def summary(self) -> str:
        """One readable line, e.g. `reviews v1->v2  step-1  weight-changed  v2 at 20%`."""
        parts = [self.identity.versions]
        if self.phase:
            parts.append(self.phase)
        parts.append(self.kind.value)
        if self.canary_weight is not None:
            parts.append(f"{self.identity.canary_version} at {self.canary_weight}%")
        if self.message:
            parts.append(self.message)
        return "  ".join(parts)
