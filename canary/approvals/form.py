"""What the Prefect UI's Resume form says above its fields: what is being decided.

Prefect renders a pause's input description as markdown above the form. It names the
gate and the phase it stands before, the release and the canary's weight now, who may
approve (plain ids: the UI does not render Slack's mention markup), four-eyes, the
deadline and what happens then, and why the gate asks again (a refused decision, a first
of two approvals).
"""

from __future__ import annotations

from canary.approvals.spec import Approvers, Gate
from canary.approvals.store import GateRequest
from canary.release import Release


def form_description(gate: Gate, request: GateRequest, release: Release, canary_weight: int) -> str:
    who = release.identity
    lines = [
        f"### {gate.title}",
        f"**{who.service}** {who.stable_version} → {who.canary_version} in `{who.namespace}`, "
        f"release `{who.release_id}`: the canary has **{canary_weight} %** of the traffic; "
        f"this gate stands before **{gate.before}**.",
        "",
        f"- **Who may approve:** {approvers_text(gate.approvers)}",
    ]
    if gate.four_eyes:
        lines.append(f"- **Four-eyes:** {four_eyes_text(request)}")
    at_timeout = "the release proceeds" if gate.on_timeout == "proceed" else "it rolls back"
    lines.append(
        f"- **Deadline:** {request.deadline:%Y-%m-%d %H:%M:%S} UTC "
        f"({gate.timeout_text} from when it was asked); then {at_timeout}."
    )
    lines.append("- Give your Slack member id as the approver, and a reason.")
    if request.note:
        lines += ["", f"> **{request.note}**"]
    return "\n".join(lines)


def approvers_text(approvers: Approvers) -> str:
    if approvers.anyone:
        return "anyone"
    groups = [f"members of the Slack user group {g}" for g in approvers.groups]
    return ", ".join([*approvers.users, *groups])


def four_eyes_text(request: GateRequest) -> str:
    if request.initiator:
        return f"{request.initiator} started this release and may not approve it."
    done = f" {', '.join(request.approved_by)} approved already." if request.approved_by else ""
    return (
        "nobody is named as the release's initiator: two different approvers must approve." + done
    )
