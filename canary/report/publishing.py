"""Publishing a release's report: Prefect artifacts in the flow run, files when asked for.

While a release runs, a recorder keeps its events (canary.wiring); when it ends, whatever
the outcome, the report is built from them and published here. Files are written to the
path given with `reporting_to` (`canary run --report PATH`), else into
`$CANARY_REPORT_DIR` when set: the markdown, and the PNG beside it with the same name.
Prefect artifacts cannot hold binary data, so the markdown artifact embeds the PNG as a
data: URI (or names the file when the image is large).
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from canary.events import ReleaseEvent
from canary.identity import ReleaseIdentity
from canary.plan import ReleasePlan
from canary.release import ReleaseResult
from canary.report.recorder import ReleaseReport, build_report
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


def publish(
    identity: ReleaseIdentity,
    plan: ReleasePlan,
    events: list[ReleaseEvent],
    result: ReleaseResult | None,
) -> ReleaseReport | None:
    """Build the report, write its files when asked, create the artifacts in a flow run.

    A report is never the reason a release fails: problems are logged.
    """
    try:
        report = make_report(identity, plan, events, result)
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
    identity: ReleaseIdentity,
    plan: ReleasePlan,
    events: list[ReleaseEvent],
    result: ReleaseResult | None,
    provider: Any | None = None,
) -> ReleaseReport:
    window = build_report(identity, events, result)
    series, source = sample_metrics(plan, window.started, window.finished, provider)
    return build_report(identity, events, result, series, source)


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

    who = report.identity
    what = f"{who.service} {who.stable_version} → {who.canary_version}"
    create_markdown_artifact(
        markdown=markdown(report, _image_address(png, files)),
        key=artifact_key("release-report", who.namespace, who.service),
        description=f"Release report: {what}, {report.outcome}",
    )
    create_table_artifact(
        table=phase_rows(report),
        key=artifact_key("release-phases", who.namespace, who.service),
        description=f"Phases of the release {what}",
    )


def _image_address(png: bytes | None, files: Path | None) -> str | None:
    if png is not None and len(png) <= MAX_INLINE_PNG:
        return "data:image/png;base64," + base64.b64encode(png).decode()
    if png is not None and files is not None:
        return str(files.with_suffix(".png").resolve())
    return None


def artifact_key(kind: str, namespace: str, service: str) -> str:
    """Artifact keys allow lowercase letters, digits and dashes only."""
    slug = f"{kind}-{namespace}-{service}".lower()
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
    who = report.identity
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", f"{who.service}-{who.release_id}")
    return Path(directory) / f"{name}.md"


def _in_flow_run() -> bool:
    from prefect.context import FlowRunContext

    return FlowRunContext.get() is not None
