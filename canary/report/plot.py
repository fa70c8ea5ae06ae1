"""The report's picture: canary against stable over the release, phase by phase.

Three panels sharing the time axis (seconds since the release started): the share of
traffic on each version with the analysis verdicts and the gates on it, the success rate,
and the p99 latency. Phase starts are dotted vertical lines named at the top; the end is green when
promoted and red when rolled back. Matplotlib's Agg backend: no display needed.
"""

from __future__ import annotations

import io
import textwrap
from datetime import datetime
from typing import Any

from canary.report.recorder import Quantity, ReleaseReport

CANARY, STABLE = "tab:orange", "tab:blue"
# Verdict markers on the traffic panel: (marker, colour, legend label).
_VERDICTS = {
    "pass": ("^", "tab:green", "passed"),
    "continue": ("^", "tab:green", "passed"),
    "hold": ("o", "tab:gray", "hold / pause"),
    "pause": ("o", "tab:gray", "hold / pause"),
    "fail": ("X", "tab:red", "failed"),
    "rollback": ("X", "tab:red", "failed"),
}
Axes = Any  # matplotlib.axes.Axes, imported only when drawing
_GATE_LABELS = {"requested": "gate asked", "given": "gate approved"}
_END = {"promoted": "tab:green", "rolled-back": "tab:red", "failed": "tab:red"}


def render_png(report: ReleaseReport, dpi: int = 100) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (traffic, success, latency) = plt.subplots(
        3, 1, sharex=True, figsize=(9, 7.5), height_ratios=[1.0, 1.3, 1.3], layout="constrained"
    )
    try:
        _traffic(traffic, report)
        _metric(success, report, "success-rate", "success rate (%)")
        _metric(latency, report, "latency-p99", "p99 latency (ms)")
        for axis in (traffic, success, latency):
            _phase_lines(axis, report)
        _phase_names(traffic, report)
        latency.set_xlabel("seconds since the release started")
        latency.set_xlim(0, max(report.seconds, 1.0) * 1.02)
        fig.suptitle(
            f"{report.title}   ({report.identity.namespace}, release {report.identity.release_id})",
            fontsize=11,
        )
        out = io.BytesIO()
        fig.savefig(out, format="png", dpi=dpi)
        return out.getvalue()
    finally:
        plt.close(fig)


def _seconds(report: ReleaseReport, moment: datetime | float) -> float:
    at = moment.timestamp() if isinstance(moment, datetime) else moment
    return at - report.started.timestamp()


def _traffic(axis: Axes, report: ReleaseReport) -> None:
    times = [_seconds(report, t) for t, _ in report.weights] + [report.seconds]
    canary = [w for _, w in report.weights] + [report.weights[-1][1]]
    axis.step(
        times,
        canary,
        where="post",
        color=CANARY,
        linewidth=2,
        label=f"{report.identity.canary_version} (canary)",
    )
    axis.step(
        times,
        [100 - w for w in canary],
        where="post",
        color=STABLE,
        linewidth=2,
        linestyle="--",
        label=f"{report.identity.stable_version} (stable)",
    )
    shown: set[str] = set()
    for decision in report.decisions:
        marker, colour, label = _VERDICTS.get(decision.decision, ("o", "tab:gray", "other"))
        at = _seconds(report, decision.time)
        weight = _weight_at(report, decision.time)
        axis.scatter(
            [at],
            [weight],
            marker=marker,
            color=colour,
            s=60,
            zorder=5,
            edgecolors="black",
            linewidths=0.5,
            label=None if label in shown else f"check {label}",
        )
        shown.add(label)
    _approvals(axis, report)
    axis.set_ylabel("traffic (%)")
    axis.set_ylim(-5, 105)
    axis.grid(True, alpha=0.3)
    axis.legend(loc="center left", fontsize=8, ncols=2)


def _approvals(axis: Axes, report: ReleaseReport) -> None:
    """Gates: a hollow purple diamond when asked, filled when approved, black when refused."""
    shown: set[str] = set()
    for approval in report.approvals:
        kind = approval.kind.removeprefix("approval-")
        face = {"requested": "none", "given": "tab:purple"}.get(kind, "black")
        axis.scatter(
            [_seconds(report, approval.time)],
            [_weight_at(report, approval.time)],
            marker="D",
            s=50,
            zorder=6,
            facecolors=face,
            edgecolors="tab:purple",
            linewidths=1.5,
            label=None if kind in shown else _GATE_LABELS.get(kind, f"gate {kind}"),
        )
        shown.add(kind)


def _weight_at(report: ReleaseReport, moment: datetime) -> int:
    weight = 0
    for at, value in report.weights:
        if at <= moment:
            weight = value
    return weight


def _metric(axis: Axes, report: ReleaseReport, quantity: Quantity, label: str) -> None:
    drawn = False
    for role, colour, version in (
        ("canary", CANARY, report.identity.canary_version),
        ("stable", STABLE, report.identity.stable_version),
    ):
        series = report.series(quantity, role)
        if series is None or not series.points:
            continue
        axis.plot(
            [_seconds(report, t) for t, _ in series.points],
            [v for _, v in series.points],
            color=colour,
            marker=".",
            markersize=4,
            linewidth=1.5,
            label=f"{version} ({role})",
        )
        drawn = True
    axis.set_ylabel(label)
    axis.grid(True, alpha=0.3)
    if drawn:
        axis.legend(loc="lower left", fontsize=8)
    else:
        rounds = len(report.decisions)
        why = textwrap.shorten(report.metrics_source or "no Prometheus", 90)
        note = axis.text(
            0.5,
            0.5,
            f"no metrics: {why}\n"
            f"({rounds} health round{'s' if rounds != 1 else ''} on the traffic panel)",
            transform=axis.transAxes,
            ha="center",
            va="center",
            fontsize=9,
            color="gray",
        )
        note.set_in_layout(False)  # a note inside the panel must not shrink the panels
        axis.set_yticks([])


def _phase_lines(axis: Axes, report: ReleaseReport) -> None:
    for phase in report.phases:
        axis.axvline(_seconds(report, phase.started), color="gray", linestyle=":", linewidth=1)
    colour = _END.get(report.outcome)
    if colour:
        axis.axvline(report.seconds, color=colour, linewidth=2, alpha=0.8)


def _phase_names(axis: Axes, report: ReleaseReport) -> None:
    for index, phase in enumerate(report.phases):
        axis.text(
            _seconds(report, phase.started),
            1.02 + 0.1 * (index % 2),  # alternate heights: short phases sit close together
            phase.name,
            rotation=30,
            fontsize=7,
            ha="left",
            va="bottom",
            transform=axis.get_xaxis_transform(),
        )
