"""The Resume form of an operator's pause, and what the Prefect UI shows above it.

A paused release is a Paused flow run like a gate; its form asks who resumes it (checked
like a gate's approver) and why. The description (markdown) says who paused it, when, at
which phase and weight, that the analysis goes on, who may resume, until when, and how.
"""

from __future__ import annotations

from datetime import datetime

from prefect.input import RunInput
from pydantic import Field

from canary.approvals.form import approvers_text
from canary.control.state import MAX_REASON, ControlRecord, PauseRecord
from canary.durations import format_duration
from canary.release import Release


class ResumeInput(RunInput):
    """Resume this paused release."""

    approver: str = Field(
        description="Your Slack member id (U…): one of the plan's approvers may resume"
    )
    reason: str = Field(
        "", max_length=MAX_REASON, description="Why; shown in the release's log and Slack thread"
    )


def pause_description(
    release: Release, pause: PauseRecord, record: ControlRecord, note: str = ""
) -> str:
    who = release.identity
    limit = release.plan.pause.max_duration
    lines = [
        f"### Paused by {pause.by}",
        f"**{who.service}** {who.stable_version} → {who.canary_version} in `{who.namespace}`, "
        f"release `{who.release_id}`: paused at **{pause.phase}** at {_clock(pause.at)}, "
        f"the canary holding **{pause.canary_weight} %** of the traffic.",
        "",
        f"- **Reason:** {pause.reason or 'none given'}",
        "- **While paused** the analysis goes on (a failing round still rolls the release "
        "back) and the hold's countdown waits.",
        f"- **Who may resume:** {approvers_text(record.approvers)}",
        "- **Until:** "
        + (
            f"{_clock(pause.until)} (pause.maxDuration {format_duration(limit)}); "
            "then the release rolls back."
            if pause.until is not None and limit is not None
            else "resumed: the plan sets no limit."
        ),
        f"- **Resume** here with your Slack member id, with `canary resume {record.run_id} "
        "--as <your id>`, or the Resume button of the release's Slack thread.",
    ]
    if note:
        lines += ["", f"> **{note}**"]
    return "\n".join(lines)


def _clock(moment: datetime) -> str:
    return f"{moment:%Y-%m-%d %H:%M:%S} UTC"
