"""Publishing a release's report: Prefect artifacts in the flow run, files when asked for.

The flow wraps the release in `reporting(...)`: while it runs, a recorder keeps its events,
a progress artifact follows the canary's share of traffic and the release metrics are
kept (see canary.notify.metrics); when it ends, whatever the outcome, the report is built
and published. Files are written to the path given with `reporting_to` (`canary run
--report PATH`), else into `$CANARY_REPORT_DIR` when set: the markdown, and the PNG beside
it with the same name. Prefect artifacts cannot hold binary data, so the markdown
artifact embeds the PNG as a data: URI (or names the file when the image is large).
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

from canary.events import EventKind, ReleaseEvent
from canary.notify import Notifier, Notifiers, current_notifier, notifying_here
from canary.plan import ReleasePlan
from canary.report.recorder import ReleaseReport, ReportRecorder, build_report
from canary.report.render import markdown, phase_rows
from canary.report.sampling import sample_metrics

log = logging.getLogger(__name__)

REPORT_DIR_ENV = "CANARY_REPORT_DIR"
MAX_INLINE_PNG = 400_000  # bytes of PNG embedded in the markdown artifact

_requested: Path | None = None


@contextlib.contextmanager
def reporting_to(path: str | Path | None) -> Iterator[Path | None]:
    """Write the reports of releases run in this block to `path` (and the PNG beside it).

    Without a path, the one an enclosing block gave still applies; yields the path in force.
    """
    global _requested
    previous, _requested = _requested, Path(path) if path else _requested
    try:
        yield _requested
    finally:
        _requested = previous


def requested_report() -> Path | None:
    return _requested


@contextlib.contextmanager
def reporting(
    plan: ReleasePlan, release_id: str, result_of: Callable[[], Any]
) -> Iterator[ReportRecorder]:
    """Record the release run in the block; publish its report when it ends, however.

    `result_of` gives the flow's ReleaseResult once the block is over (None if none).
    """
    recorder = ReportRecorder()
    # Context-local: releases running side by side in one process keep apart.
    with notifying_here(*_current_notifiers(), recorder, *_live_notifiers(plan)):
        try:
            yield recorder
        finally:
            publish(plan, release_id, recorder.events, result_of())


def _current_notifiers() -> list[Notifier]:
    current = current_notifier()
    return list(current.notifiers) if isinstance(current, Notifiers) else [current]


def _live_notifiers(plan: ReleasePlan) -> list[Notifier]:
    from canary.notify.metrics import metrics_notifier_from_env

    live: list[Notifier] = []
    if _in_flow_run():
        live.append(ProgressNotifier(plan))
    metrics = metrics_notifier_from_env()
    if metrics is not None:
        live.append(metrics)
    return live


def publish(
    plan: ReleasePlan, release_id: str, events: list[ReleaseEvent], result: Any | None
) -> ReleaseReport | None:
    """Build the report, write its files when asked, create the artifacts in a flow run.

    A report is never the reason a release fails: problems are logged.
    """
    try:
        report = make_report(plan, release_id, events, result)
        png = _png(report)
        files = _destination(report)
        if files is not None:
            write_report(report, png, files)
        if _in_flow_run():
            create_artifacts(report, png, files)
        return report
    except Exception:
        log.warning("could not publish the release report", exc_info=True)
        return None


def make_report(
    plan: ReleasePlan,
    release_id: str,
    events: list[ReleaseEvent],
    result: Any | None,
    provider: Any | None = None,
) -> ReleaseReport:
    identity = {
        "release_id": release_id,
        "service": plan.service,
        "namespace": plan.namespace,
        "stable_version": plan.stable.version,
        "canary_version": plan.canary.version,
    }
    window = build_report(events, result, identity)
    series, source = sample_metrics(plan, window.started, window.finished, provider)
    return build_report(events, result, identity, series, source)


def write_report(report: ReleaseReport, png: bytes | None, path: Path) -> Path:
    """The markdown at `path`, the plot beside it (`NAME.png`, linked from the markdown)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = path.with_suffix(".png")
    if png is not None:
        image.write_bytes(png)
    path.write_text(markdown(report, image.name if png is not None else None), encoding="utf-8")
    return path


def create_artifacts(report: ReleaseReport, png: bytes | None, files: Path | None) -> None:
    """The markdown summary and the phase table, keyed by service (one history each)."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    what = f"{report.service} {report.stable_version} → {report.canary_version}"
    create_markdown_artifact(
        markdown=markdown(report, _image_address(png, files)),
        key=artifact_key("release-report", report),
        description=f"Release report: {what}, {report.outcome}",
    )
    create_table_artifact(
        table=phase_rows(report),
        key=artifact_key("release-phases", report),
        description=f"Phases of the release {what}",
    )


def _image_address(png: bytes | None, files: Path | None) -> str | None:
    if png is not None and len(png) <= MAX_INLINE_PNG:
        return "data:image/png;base64," + base64.b64encode(png).decode()
    if png is not None and files is not None:
        return str(files.with_suffix(".png").resolve())
    return None


def artifact_key(kind: str, report_or_plan: Any) -> str:
    """Artifact keys allow lowercase letters, digits and dashes only."""
    slug = f"{kind}-{report_or_plan.namespace}-{report_or_plan.service}".lower()
    return re.sub(r"[^a-z0-9-]+", "-", slug).strip("-")


def _png(report: ReleaseReport) -> bytes | None:
    from canary.report.plot import render_png

    try:
        return render_png(report)
    except Exception:
        log.warning("could not draw the release plot", exc_info=True)
        return None


def _destination(report: ReleaseReport) -> Path | None:
    if _requested is not None:
        return _requested
    directory = os.environ.get(REPORT_DIR_ENV)
    if not directory:
        return None
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", f"{report.service}-{report.release_id}")
    return Path(directory) / f"{name}.md"


def _in_flow_run() -> bool:
    from prefect.context import FlowRunContext

    return FlowRunContext.get() is not None


# The events that report a weight the cluster routes now (a phase's start names its target).
_MOVES = (EventKind.WEIGHT_CHANGED, EventKind.PROMOTED, EventKind.ROLLBACK)


class ProgressNotifier:
    """A Prefect progress artifact showing the canary's share of traffic, kept up to date."""

    def __init__(self, plan: ReleasePlan):
        self.key = artifact_key("release-progress", plan)
        self.description = f"Share of {plan.service} traffic on {plan.canary.version}"
        self._id: UUID | None = None
        self._weight: int | None = None

    def notify(self, event: ReleaseEvent) -> None:
        from prefect.artifacts import create_progress_artifact, update_progress_artifact

        moved = event.kind in _MOVES and event.canary_weight is not None
        weight = event.canary_weight if moved else self._weight or 0
        if self._id is None:
            self._id = create_progress_artifact(
                progress=float(weight), key=self.key, description=self.description
            )
        elif weight != self._weight:
            update_progress_artifact(artifact_id=self._id, progress=float(weight))
        self._weight = weight
