"""The report of one release: what happened (its events), built into plain data.

`ReportRecorder` is a notifier that keeps a release's events; `build_report` turns them,
with the flow's `ReleaseResult` and any sampled metrics, into a `ReleaseReport`, the one
input of every rendering (markdown, table, plot).
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, Field

from canary.events import OPERATOR_KINDS, ROUTED_WEIGHT, EventKind, ReleaseEvent
from canary.identity import ReleaseIdentity
from canary.release import PhaseRecord, ReleaseResult

Role = Literal["canary", "stable"]
Quantity = Literal["success-rate", "latency-p99"]


class ReportRecorder:
    """Keeps every event it is sent, in order (a notifier: `notify(event)`)."""

    def __init__(self) -> None:
        self._events: list[ReleaseEvent] = []
        self._lock = threading.Lock()

    def notify(self, event: ReleaseEvent) -> None:
        with self._lock:
            self._events.append(event)

    @property
    def events(self) -> list[ReleaseEvent]:
        with self._lock:
            return list(self._events)


# --- the report's data -------------------------------------------------------------------


class AnalysisEntry(BaseModel):
    """One verdict of the analysis or of the test phase's checks."""

    time: datetime
    phase: str | None
    decision: str
    message: str
    # Sampled metrics at that moment (None when not sampled).
    values: dict[str, float] = Field(default_factory=dict)


class Approval(BaseModel):
    time: datetime
    phase: str | None
    kind: str  # approval-requested, approval-given, approval-rejected, approval-timed-out
    message: str


class OperatorAction(BaseModel):
    """What an operator did (canary.control): pause, resume, promote, abort, retry."""

    time: datetime
    phase: str | None
    kind: str  # operator-paused, operator-resumed, operator-promoted, ...
    decision: str | None  # as counted in canary_release_decisions_total; None for a note
    message: str


class MetricSeries(BaseModel):
    """One quantity of one version over the release, as (Unix seconds, value) points."""

    quantity: Quantity
    role: Role
    points: list[tuple[float, float]] = Field(default_factory=list)

    @property
    def key(self) -> str:
        return f"{self.role} {self.quantity}"

    def at(self, moment: float) -> float | None:
        """The last value at or before `moment`."""
        earlier = [value for t, value in self.points if t <= moment]
        return earlier[-1] if earlier else None


class ReleaseReport(BaseModel):
    identity: ReleaseIdentity
    outcome: str  # promoted, rolled-back, failed, or unknown when the flow ended otherwise
    reason: str
    started: datetime
    finished: datetime
    phases: list[PhaseRecord]
    weights: list[tuple[datetime, int]]
    decisions: list[AnalysisEntry]
    approvals: list[Approval]
    operator_actions: list[OperatorAction] = Field(default_factory=list)
    retry_of: str | None = None  # the rolled-back run this release retried
    metrics: list[MetricSeries] = Field(default_factory=list)
    metrics_source: str = ""

    @property
    def seconds(self) -> float:
        return (self.finished - self.started).total_seconds()

    @property
    def title(self) -> str:
        who = self.identity
        return f"{who.service} {who.stable_version} → {who.canary_version}: {self.outcome}"

    def series(self, quantity: Quantity, role: Role) -> MetricSeries | None:
        return next((s for s in self.metrics if s.quantity == quantity and s.role == role), None)


# --- building it ---------------------------------------------------------------------------


def build_report(
    identity: ReleaseIdentity,
    events: list[ReleaseEvent],
    result: ReleaseResult | None = None,
    metrics: list[MetricSeries] | None = None,
    metrics_source: str = "",
) -> ReleaseReport:
    """The report from the release's events and, when the flow returned one, its result."""
    now = datetime.now(UTC)
    started = result.started if result is not None else (events[0].time if events else now)
    finished = result.finished if result is not None else (events[-1].time if events else now)
    return ReleaseReport(
        identity=identity,
        outcome=result.outcome if result is not None else _outcome(events),
        reason=result.reason if result is not None else _reason(events),
        started=started,
        finished=finished,
        phases=_phases(events, result),
        weights=_weights(events, started),
        decisions=_decisions(events, metrics or []),
        approvals=[
            Approval(time=e.time, phase=e.phase, kind=e.kind.value, message=e.message)
            for e in events
            if e.kind.value.startswith("approval-")
        ],
        operator_actions=[
            OperatorAction(
                time=e.time,
                phase=e.phase,
                kind=e.kind.value,
                decision=e.decision,
                message=e.message,
            )
            for e in events
            if e.kind in OPERATOR_KINDS
        ],
        retry_of=result.retry_of if result is not None else None,
        metrics=metrics or [],
        metrics_source=metrics_source,
    )


def _outcome(events: list[ReleaseEvent]) -> str:
    kinds = {e.kind for e in events}
    if EventKind.PROMOTED in kinds:
        return "promoted"
    if EventKind.FAILED in kinds:
        return "failed"
    if EventKind.ROLLBACK in kinds:
        return "rolled-back"
    return "unknown"


def _reason(events: list[ReleaseEvent]) -> str:
    last = next((e for e in reversed(events) if e.message), None)
    return last.message if last else "the release ended without an outcome"


def _phases(events: list[ReleaseEvent], result: ReleaseResult | None) -> list[PhaseRecord]:
    if result is not None:
        return [p.model_copy() for p in result.phases]
    spans: dict[str, PhaseRecord] = {}
    for e in events:
        if e.kind is EventKind.PHASE_STARTED and e.phase:
            spans[e.phase] = PhaseRecord(
                name=e.phase, canary_weight=e.canary_weight or 0, started=e.time
            )
        elif e.kind is EventKind.PHASE_FINISHED and e.phase in spans:
            spans[e.phase].finished, spans[e.phase].outcome = e.time, "completed"
    return list(spans.values())


def _weights(events: list[ReleaseEvent], started: datetime) -> list[tuple[datetime, int]]:
    """The canary's share of traffic over time: 0 at the start, then every change."""
    weights = [(started, 0)]
    for e in events:
        if (
            e.kind in ROUTED_WEIGHT
            and e.canary_weight is not None
            and e.canary_weight != weights[-1][1]
        ):
            weights.append((e.time, e.canary_weight))
    return weights


def _decisions(events: list[ReleaseEvent], metrics: list[MetricSeries]) -> list[AnalysisEntry]:
    decisions = []
    for e in events:
        if e.kind is not EventKind.ANALYSIS:
            continue
        moment = e.time.timestamp()
        values = {s.key: v for s in metrics if (v := s.at(moment)) is not None}
        decisions.append(
            AnalysisEntry(
                time=e.time,
                phase=e.phase,
                decision=str(e.decision),
                message=e.message,
                values=values,
            )
        )
    return decisions
