"""Who may decide a gate: its approvers (users, Slack user groups, anyone) and four-eyes."""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection

from canary.approvals.store import GateRequest

log = logging.getLogger(__name__)

Members = Callable[[str], Collection[str]]
"""Resolves a Slack user group id to the ids of its members."""


def refusal(request: GateRequest, who: str, decision: str, members: Members | None) -> str | None:
    """Why `who` may not take `decision` at this gate, or None if they may."""
    who = who.strip()
    if not who:
        return "the approver is not named"
    if request.four_eyes and decision == "approve" and who == request.initiator:
        return f"{who} started this release; four-eyes needs someone else to approve"
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


def slack_members() -> Members:
    """User groups resolved through the Slack Web API, when Slack is configured."""
    from canary.slack.api import group_members, slack_client_from_env

    client = slack_client_from_env()
    return (lambda group: group_members(client, group)) if client is not None else _no_members


def _no_members(group: str) -> Collection[str]:
    raise LookupError("Slack is not configured; user groups cannot be resolved")
