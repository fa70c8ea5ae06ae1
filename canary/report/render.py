"""A release report as markdown (the summary) and as table rows (the phases)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from canary.report.recorder import ReleaseReport

_VALUE_COLUMNS = (
    ("canary success-rate", "canary ok %", "{:.1f}"),
    ("stable success-rate", "stable ok %", "{:.1f}"),
    ("canary latency-p99", "canary p99 ms", "{:.0f}"),
    ("stable latency-p99", "stable p99 ms", "{:.0f}"),
)


def clock(moment: datetime | None) -> str:
    return moment.strftime("%H:%M:%S.%f")[:-5] if moment else "-"


def phase_rows(report: ReleaseReport) -> list[dict[str, Any]]:
    """One row per phase, for the table artifact."""
    return [
        {
            "phase": p.name,
            "started": p.started.isoformat(),
            "finished": p.finished.isoformat() if p.finished else None,
            "seconds": round(p.seconds, 2) if p.seconds is not None else None,
            "canary weight": p.canary_weight,
            "outcome": p.outcome,
        }
        for p in report.phases
    ]


def markdown(report: ReleaseReport, plot: str | None = None) -> str:
    """The summary; `plot` is the image's address (a file name or a data: URI)."""
    parts = [
        f"# {report.title}",
        _intro(report),
        "## Phases",
        _phases(report),
        "## Traffic on the canary",
        _traffic(report),
        "## Decisions",
        _decisions(report),
        "## Approvals",
        _approvals(report),
        "## Operator actions",
        _operator_actions(report),
        "## Metrics",
        f"![canary and stable over the release]({plot})" if plot else "No plot.",
        f"Source: {report.metrics_source}." if report.metrics_source else "",
    ]
    return "\n\n".join(p for p in parts if p) + "\n"


def _intro(report: ReleaseReport) -> str:
    day, who = report.started.strftime("%Y-%m-%d"), report.identity
    return (
        f"Release `{who.release_id}` of `{who.service}` in namespace "
        f"`{who.namespace}`, {who.stable_version} → {who.canary_version}, "
        f"{day} {clock(report.started)} → {clock(report.finished)} UTC "
        f"({report.seconds:.1f} s)."
        + (f" A retry of rolled-back run `{report.retry_of}`." if report.retry_of else "")
        + f"\n\n**Outcome: {report.outcome}** — {_cell(report.reason)}"
    )


def _phases(report: ReleaseReport) -> str:
    if not report.phases:
        return "No phase ran."
    rows = [
        [
            p.name,
            clock(p.started),
            clock(p.finished),
            f"{p.seconds:.1f} s" if p.seconds is not None else "-",
            f"{p.canary_weight} %",
            p.outcome,
        ]
        for p in report.phases
    ]
    return _table(["phase", "started", "finished", "took", "canary weight", "outcome"], rows)


def _traffic(report: ReleaseReport) -> str:
    steps = [f"{weight} % at {clock(moment)}" for moment, weight in report.weights]
    return " → ".join(steps)


def _decisions(report: ReleaseReport) -> str:
    if not report.decisions:
        return "No analysis ran."
    shown = [c for c in _VALUE_COLUMNS if any(c[0] in d.values for d in report.decisions)]
    header = ["time", "phase", "decision", *[c[1] for c in shown], "message"]
    rows = [
        [
            clock(d.time),
            d.phase or "-",
            d.decision,
            *[c[2].format(d.values[c[0]]) if c[0] in d.values else "-" for c in shown],
            _cell(d.message),
        ]
        for d in report.decisions
    ]
    return _table(header, rows)


def _approvals(report: ReleaseReport) -> str:
    if not report.approvals:
        return "No gate asked anyone."
    rows = [
        [clock(a.time), a.phase or "-", a.kind.removeprefix("approval-"), _cell(a.message)]
        for a in report.approvals
    ]
    return _table(["time", "before", "decision", "message"], rows)


def _operator_actions(report: ReleaseReport) -> str:
    if not report.operator_actions:
        return "No operator acted on the release."
    rows = [
        [clock(a.time), a.phase or "-", a.kind.removeprefix("operator-"), _cell(a.message)]
        for a in report.operator_actions
    ]
    return _table(["time", "phase", "action", "message"], rows)


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _cell(text: str) -> str:
    """Text safe inside a markdown table cell."""
    return " ".join(text.split()).replace("|", "\\|")
