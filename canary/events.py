"""What a release tells the world: one event per transition."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field


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


class ReleaseEvent(BaseModel):
    model_config = ConfigDict(frozen=True)

    release_id: str
    service: str
    namespace: str
    stable_version: str
    canary_version: str
    kind: EventKind
    phase: str | None = None
    # Approval events: the gate's key (the phase for the plan's gates; its own for pauses
    # during a phase), which a Slack button must name to decide it.
    gate: str | None = None
    canary_weight: int | None = Field(None, ge=0, le=100)
    message: str = ""
    time: datetime = Field(default_factory=lambda: datetime.now(UTC))

    def summary(self) -> str:
        """One readable line, e.g. `reviews v1->v2  step-1  weight-changed  v2 at 20%`."""
        parts = [f"{self.service} {self.stable_version}->{self.canary_version}"]
        if self.phase:
            parts.append(self.phase)
        parts.append(self.kind.value)
        if self.canary_weight is not None:
            parts.append(f"{self.canary_version} at {self.canary_weight}%")
        if self.message:
            parts.append(self.message)
        return "  ".join(parts)
