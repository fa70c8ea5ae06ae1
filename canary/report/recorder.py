"""The report of one release: what happened (its events), built into plain data.

`ReportRecorder` is a notifier that keeps a release's events; `build_report` turns them,
with the flow's `ReleaseResult` and any sampled metrics, into a `ReleaseReport`, the one
input of every rendering (markdown, table, plot).
"""

from __future__ import annotations

import re
import threading
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from canary.events import EventKind, ReleaseEvent

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


class PhaseSpan(BaseModel):
    name: str
    canary_weight: int
    started: datetime
    finished: datetime | None = None
    outcome: str = "running"

    @property
    def seconds(self) -> float | None:
        return (self.finished - self.started).total_seconds() if self.finished else None


class Decision(BaseModel):
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
    release_id: str
    service: str
    namespace: str
    stable_version: str
    canary_version: str
    outcome: str  # promoted, rolled-back, failed, or unknown when the flow ended otherwise
    reason: str
    started: datetime
    finished: datetime
    phases: list[PhaseSpan]
    weights: list[tuple[datetime, int]]
    decisions: list[Decision]
    approvals: list[Approval]
    metrics: list[MetricSeries] = Field(default_factory=list)
    metrics_source: str = ""

    @property
    def seconds(self) -> float:
        return (self.finished - self.started).total_seconds()

    @property
    def title(self) -> str:
        return f"{self.service} {self.stable_version} → {self.canary_version}: {self.outcome}"

    def series(self, quantity: Quantity, role: Role) -> MetricSeries | None:
        return next((s for s in self.metrics if s.quantity == quantity and s.role == role), None)


# --- building it ---------------------------------------------------------------------------

_ANALYSIS = re.compile(r"^analysis (\w+)\b")


def decision_of(message: str) -> str:
    """The decision an analysis event's message states.

    Metric analysis says `analysis continue|hold|pause|rollback: ...`; health rounds say
    `healthy: ...` or name the failed checks with `FAILED`; the test phase's checks say
    `checks failed: ...` or give their counts.
    """
    found = _ANALYSIS.match(message)
    if found:
        return found.group(1)
    if "FAILED" in message or message.startswith("checks failed"):
        return "fail"
    return "pass"


def build_report(
    events: list[ReleaseEvent],
    result: Any | None = None,
    identity: dict[str, str] | None = None,
    metrics: list[MetricSeries] | None = None,
    metrics_source: str = "",
) -> ReleaseReport:
    """The report from the release's events and, when the flow returned one, its result.

    `identity` (release_id, service, namespace, stable_version, canary_version) names the
    release when there is neither result nor event.
    """
    names = _identity(events, result, identity or {})
    now = datetime.now(UTC)
    started = result.started if result is not None else (events[0].time if events else now)
    finished = result.finished if result is not None else (events[-1].time if events else now)
    return ReleaseReport(
        **names,
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
        metrics=metrics or [],
        metrics_source=metrics_source,
    )


_IDENTITY = ("release_id", "service", "namespace", "stable_version", "canary_version")


def _identity(events: list[ReleaseEvent], result: Any | None, given: dict[str, str]) -> dict:
    source: Any = result if result is not None else (events[0] if events else None)
    if source is None:
        return {key: given.get(key, "") for key in _IDENTITY}
    return {key: getattr(source, key) for key in _IDENTITY}


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


def _phases(events: list[ReleaseEvent], result: Any | None) -> list[PhaseSpan]:
    if result is not None:
        return [PhaseSpan.model_validate(p, from_attributes=True) for p in result.phases]
    spans: dict[str, PhaseSpan] = {}
    for e in events:
        if e.kind is EventKind.PHASE_STARTED and e.phase:
            spans[e.phase] = PhaseSpan(
                name=e.phase, canary_weight=e.canary_weight or 0, started=e.time
            )
        elif e.kind is EventKind.PHASE_FINISHED and e.phase in spans:
            spans[e.phase].finished, spans[e.phase].outcome = e.time, "completed"
    return list(spans.values())


def _weights(events: list[ReleaseEvent], started: datetime) -> list[tuple[datetime, int]]:
    """The canary's share of traffic over time: 0 at the start, then every change."""
    weights = [(started, 0)]
    for e in events:
        moved = e.kind in (EventKind.WEIGHT_CHANGED, EventKind.PROMOTED, EventKind.ROLLBACK)
        if moved and e.canary_weight is not None and e.canary_weight != weights[-1][1]:
            weights.append((e.time, e.canary_weight))
    return weights


def _decisions(events: list[ReleaseEvent], metrics: list[MetricSeries]) -> list[Decision]:
    decisions = []
    for e in events:
        if e.kind is not EventKind.ANALYSIS:
            continue
        moment = e.time.timestamp()
        values = {s.key: v for s in metrics if (v := s.at(moment)) is not None}
        decisions.append(
            Decision(
                time=e.time,
                phase=e.phase,
                decision=decision_of(e.message),
                message=e.message,
                values=values,
            )
        )
    return decisions
