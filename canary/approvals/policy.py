"""Who may decide a gate: its approvers (users, Slack user groups, anyone) and four-eyes.

Four-eyes means one person alone never passes the gate. When the release knows who
started it (its initiator), someone else must approve; when it does not (a run started
without one, the release train), two different approvers must approve.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Sequence

from canary.approvals.store import Question

log = logging.getLogger(__name__)

Members = Callable[[str], Collection[str]]
"""Resolves a Slack user group id to the ids of its members."""


def refusal(request: Question, who: str, decision: str, members: Members | None) -> str | None:
    """Why `who` may not take `decision` (four-eyes counts for `approve`), or None if they may."""
    who = who.strip()
    if not who:
        return "the approver is not named"
    if request.four_eyes and decision == "approve":
        if who == request.initiator:
            return f"{who} started this release; four-eyes needs someone else to approve"
        if who in request.approved_by:
            return f"{who} approved already; four-eyes needs a second, different approver"
    if request.approvers.anyone or who in request.approvers.users:
        return None
    for group in request.approvers.groups:
        if members is None:
            continue
        try:
            if who in members(group):
                return None
        except Exception as exc:  # a Slack outage must not approve anything
            log.warning("cannot read members of %s: %s", group, exc)
    return f"{who} is not an approver of {request.title}"


def needs_another_approval(request: Question, who: str) -> bool:
    """Whether `who`'s approval leaves a four-eyes gate waiting for a second approver."""
    if not request.four_eyes or request.initiator:
        return False
    return len({*request.approved_by, who}) < 2


def approved_by_all(request: Question, people: Sequence[str], members: Members | None) -> bool:
    """Whether these people, approving one after the other, pass the question."""
    so_far: list[str] = []
    for who in people:
        asked = request.model_copy(update={"approved_by": so_far})
        if refusal(asked, who, "approve", members) is not None:
            return False
        if not needs_another_approval(asked, who):
            return True
        so_far = [*so_far, who]
    return False


def slack_members() -> Members:
    """User groups resolved through the Slack Web API, when Slack is configured."""
    from canary.slack.api import group_members, slack_client_from_env

    client = slack_client_from_env()
    return (lambda group: group_members(client, group)) if client is not None else _no_members


def _no_members(group: str) -> Collection[str]:
    raise LookupError("Slack is not configured; user groups cannot be resolved")
