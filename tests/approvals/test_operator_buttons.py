"""The operators' buttons of a release thread's parent message, clicked through the listener.

Pause, Resume and Abort are verified like the gate buttons: Slack's signature, the signed
binding of run and action (for the button clicked), the user among the plan's approvers.
Every refused click leaves the run as it was.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from canary.events import EventKind
from flows.canary_release import ReleaseRolledBack
from tests.approvals.conftest import SIGNING_SECRET
from tests.control.test_pause_resume import step_plan
from tests.support.operators import OperatedRelease
from tests.support.slack_stub import SlackStub, block_actions, send_interaction
from tests.support.waiting import wait_until

pytestmark = pytest.mark.usefixtures("slack_env", "prefect_api_url")
APPROVER, MALLORY = "U0ONCALL", "U0MALLORY"
GATES = [{"before": "promote", "approvers": {"users": [APPROVER]}, "timeout": "120s"}]
SLACK = {"slack": {"channel": "#releases"}}


def parent(stub: SlackStub, release_id: str) -> tuple[str, dict[str, Any]]:
    """(channel, the parent message as it reads now) of the release's thread."""

    def found() -> tuple[str, dict[str, Any]] | None:
        for call in stub.calls_to("chat.postMessage"):
            if "thread_ts" not in call.params and release_id in str(call.params.get("blocks")):
                channel, ts = call.response["channel"], call.response["ts"]
                return channel, stub.messages[(channel, ts)]
        return None

    return wait_until(found, 30, message="the thread's parent message")


def parent_once(
    stub: SlackStub, release_id: str, shows: Callable[[dict[str, str]], bool], what: str
) -> dict[str, Any]:
    """The parent message once its buttons satisfy `shows`."""

    def found() -> dict[str, Any] | None:
        message = parent(stub, release_id)[1]
        return message if shows(buttons(message)) else None

    return wait_until(found, 30, message=f"the parent message with {what}")


def buttons(message: dict[str, Any]) -> dict[str, str]:
    """The parent's operator buttons: action id -> signed value."""
    blocks = [b for b in message["blocks"] if b.get("block_id") == "canary_operator"]
    return {e["action_id"]: e["value"] for b in blocks for e in b["elements"]}


def click(listener: str, channel: str, message: dict, user: str, action: str, value: str) -> None:
    payload = block_actions(user, action, value, channel, message)
    status, body = send_interaction(listener, SIGNING_SECRET, payload)
    assert status == 200, body


def told(stub: SlackStub, user: str, count: int) -> str:
    """The `count`th ephemeral answer to `user` (1-based), once it is there."""

    def answers() -> list[str] | None:
        said = [
            c.params["text"]
            for c in stub.calls_to("chat.postEphemeral")
            if c.params["user"] == user
        ]
        return said if len(said) >= count else None

    return wait_until(answers, 30, message=f"answer {count} to {user}")[count - 1]


def test_refused_clicks_change_nothing_and_an_approver_pauses_resumes_and_aborts(
    listener, stub, start_sandbox, fast_plan
):
    box = start_sandbox("healthy")
    plan = step_plan(fast_plan, 600, gates=GATES, notifications=SLACK)
    release = OperatedRelease(plan, box, "r-op-buttons")
    before = release.holding("step-1")
    channel, message = parent(stub, release.release_id)
    values = buttons(message)
    assert set(values) == {"canary_pause", "canary_promote", "canary_abort"}
    assert f"|{release.run_id}|operator-pause|" in values["canary_pause"]

    pause = values["canary_pause"]
    forged = pause[:-4] + ("0000" if not pause.endswith("0000") else "1111")
    click(listener, channel, message, APPROVER, "canary_pause", forged)
    assert "does not match its signature" in told(stub, APPROVER, 1)
    click(listener, channel, message, APPROVER, "canary_promote", pause)  # moved to Promote
    assert "signed for another button" in told(stub, APPROVER, 2)
    for n, action in enumerate(("canary_pause", "canary_promote", "canary_abort"), start=1):
        click(listener, channel, message, MALLORY, action, values[action])
        assert f"{MALLORY} is not an approver" in told(stub, MALLORY, n)
    status, _ = send_interaction(
        listener,
        SIGNING_SECRET,
        block_actions(APPROVER, "canary_pause", pause, channel, message),
        signature="v0=" + "0" * 64,
    )
    assert status == 401

    now = release.record()
    assert (now.slot, now.paused, now.holding) == (before.slot, None, "step-1")
    assert release.state().is_running()
    assert not [e for e in release.events if e.kind.value.startswith("operator-")]
    from canary.stopping import abort_requested

    assert not abort_requested(release.run_id)

    click(listener, channel, message, APPROVER, "canary_pause", pause)
    assert "paused by U0ONCALL at step-1" in told(stub, APPROVER, 3)
    paused = parent_once(stub, release.release_id, lambda b: "canary_resume" in b, "Resume")
    assert "paused by an operator" in str(paused["blocks"])
    click(listener, channel, paused, APPROVER, "canary_resume", buttons(paused)["canary_resume"])
    release.seen(EventKind.OPERATOR_RESUMED)

    click(listener, channel, paused, APPROVER, "canary_abort", values["canary_abort"])
    outcome = release.finish()
    assert isinstance(outcome, ReleaseRolledBack), outcome
    aborted = release.seen(EventKind.OPERATOR_ABORTED)
    assert aborted.decision == "operator-abort" and f"aborted by {APPROVER}" in aborted.message
    final = parent_once(stub, release.release_id, lambda b: not b, "no button")
    assert "rolled back" in str(final["blocks"])
