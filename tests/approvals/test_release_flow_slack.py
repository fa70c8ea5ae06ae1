"""The canary_release flow with its Slack thread, answered by clicks through the listener."""

from __future__ import annotations

import time
from typing import Any

import pytest

from canary.approvals.decisions import flow_run_state
from canary.events import EventKind, ReleaseEvent
from canary.notify import notifying
from flows.canary_release import ReleaseRolledBack
from sandbox.prometheus import free_port
from tests.approvals.conftest import SIGNING_SECRET
from tests.support.releases import release_outcome, start_in_thread
from tests.support.slack_stub import SlackStub, block_actions, send_interaction
from tests.support.waiting import wait_until

pytestmark = pytest.mark.usefixtures("slack_env", "prefect_api_url")
APPROVER = "U0RELEASER"
GATES = [
    {"before": "step-1", "approvers": {"users": [APPROVER]}, "timeout": "60s"},
    {"before": "promote", "approvers": {"users": [APPROVER]}, "timeout": "60s"},
]
SLACK = {"slack": {"channel": "#releases"}}


class SlackRelease:
    """canary_release in a thread (it posts to the plan's Slack thread itself), and a record."""

    def __init__(self, plan: Any, box: Any, release_id: str):
        self.plan, self.box, self.release_id = plan, box, release_id
        self.events: list[tuple[float, ReleaseEvent]] = []
        self.outcome: Any = None
        self.thread = start_in_thread(self._run)

    def notify(self, event: ReleaseEvent) -> None:
        self.events.append((time.monotonic(), event))

    def _run(self) -> None:
        with notifying(self):
            self.outcome = release_outcome(self.plan, self.box, self.release_id)

    def given_at(self, gate: str, timeout: float = 30) -> float:
        """When the flow went past `gate` (its approval-given event)."""

        def seen() -> float | None:
            return next(
                (
                    at
                    for at, e in self.events
                    if e.kind is EventKind.APPROVAL_GIVEN and e.gate == gate
                ),
                None,
            )

        return wait_until(seen, timeout, interval=0.02, message=f"the flow past {gate}")

    def finish(self) -> Any:
        self.thread.join(90)
        assert not self.thread.is_alive(), "the release did not finish"
        return self.outcome


def approval_request(stub: SlackStub, phase: str) -> tuple[str, dict[str, Any]]:
    """(channel, message) of the approval request with buttons posted for `phase`."""

    def found() -> tuple[str, dict[str, Any]] | None:
        for call in stub.calls_to("chat.postMessage"):
            message = call.response["message"]
            has_buttons = any(b["type"] == "actions" for b in message["blocks"])
            if has_buttons and call.params["text"].startswith(f"{phase}: approval-requested"):
                return call.response["channel"], message
        return None

    return wait_until(found, 30, interval=0.05, message=f"the approval request at {phase}")


def click(listener: str, stub: SlackStub, phase: str, user: str, action: str) -> float:
    """A signed button click on the request for `phase`; returns when it was clicked."""
    channel, message = approval_request(stub, phase)
    buttons = next(b for b in message["blocks"] if b["type"] == "actions")
    value = buttons["elements"][0]["value"]
    wait_paused(value)
    payload = block_actions(user, action, value, channel, message)
    clicked = time.monotonic()
    status, body = send_interaction(listener, SIGNING_SECRET, payload)
    assert status == 200, body
    return clicked


def wait_paused(button_value: str) -> None:
    """Until the run the button names is paused at its gate.

    The request is posted just before the run pauses; a click in between is refused as
    "not waiting" (a person would click again), which is not what these tests are about.
    """
    _, run_id, gate, _ = button_value.split("|")

    def paused() -> bool:
        state = flow_run_state(run_id)
        return bool(state and state.is_paused() and state.state_details.pause_key == f"gate-{gate}")

    wait_until(paused, 30, interval=0.05, message=f"the run to pause at {gate}")


def thread_of(stub: SlackStub, release_id: str) -> tuple[Any, list[Any]]:
    """The release's only parent message and its replies, in order."""
    parents = [
        c
        for c in stub.calls_to("chat.postMessage")
        if "thread_ts" not in c.params and release_id in str(c.params.get("blocks"))
    ]
    assert len(parents) == 1, f"{len(parents)} parent messages"
    return parents[0], stub.replies(parents[0].response["ts"])


def wait_for_thread(stub: SlackStub, release: SlackRelease, timeout: float = 20) -> list[Any]:
    """The replies, once there is one per event the release sent (Slack may lag behind)."""
    wanted = len(release.events)

    def complete() -> list[Any] | None:
        replies = thread_of(stub, release.release_id)[1]
        return replies if len(replies) == wanted else None

    return wait_until(complete, timeout, message=f"{wanted} replies in the release's thread")


def approve_both_gates(listener: str, stub: SlackStub, release: SlackRelease) -> None:
    """Click Approve at each gate, and wait until the flow went past it."""
    for phase in ("step-1", "promote"):
        click(listener, stub, phase, APPROVER, "canary_approve")
        release.given_at(phase)


def check_thread(stub: SlackStub, release: SlackRelease) -> None:
    """One parent updated in place, one reply per transition, in the order they happened."""
    replies = wait_for_thread(stub, release)
    parent, _ = thread_of(stub, release.release_id)
    ts, channel = parent.response["ts"], parent.response["channel"]
    said = [r.params["text"].split(" - ")[0] for r in replies]
    assert said == [
        f"{e.phase}: {e.kind.value}" if e.phase else e.kind.value for _, e in release.events
    ]
    for transition in (
        "step-1: approval-requested",
        "step-1: approval-given",
        "step-1: phase-started",
        "step-1: weight-changed",
        "step-1: phase-finished",
        "promote: approval-requested",
        "promote: approval-given",
        "promote: weight-changed",
        "promoted",
    ):
        assert transition in said, f"no {transition!r} reply in {said}"
    updates = [c for c in stub.calls_to("chat.update") if c.params["ts"] == ts]
    assert len(updates) == len(replies) - 1  # every event after the first
    shown = str(stub.messages[(channel, ts)]["blocks"])
    assert "*Status*\\npromoted" in shown and "*Canary v2*\\n100%" in shown


def test_two_gates_answered_in_slack_and_the_release_is_promoted(
    listener, stub, start_sandbox, fast_plan
):
    box = start_sandbox("healthy")
    plan = fast_plan(gates=GATES, notifications=SLACK)
    release = SlackRelease(plan, box, "r-slack-flow")

    approve_both_gates(listener, stub, release)

    result = release.finish()
    assert result.outcome == "promoted", result
    check_thread(stub, release)


def test_rate_limits_and_server_errors_delay_but_do_not_lose_the_thread(
    listener, stub, start_sandbox, fast_plan
):
    box = start_sandbox("healthy")
    plan = fast_plan(gates=GATES, notifications=SLACK)
    stub.fail_next(429, 1, retry_after=1)
    stub.fail_next(500, 1)
    release = SlackRelease(plan, box, "r-slack-flow-retries")
    approval_request(stub, "step-1")
    stub.fail_next(500, 1)  # the next call: the click's resume path or the next event
    stub.fail_next(429, 1, retry_after=1)

    approve_both_gates(listener, stub, release)

    result = release.finish()
    assert result.outcome == "promoted", result
    check_thread(stub, release)
    failed = [c for c in stub.calls if c.status != 200]
    assert sorted(c.status for c in failed) == [429, 429, 500, 500]
    for limited in (c for c in failed if c.status == 429):
        # The same call again (the listener's own calls may come in between).
        again = [c for c in stub.calls if c.params == limited.params and c.at > limited.at]
        assert again and again[0].at - limited.at >= 1.0, "Retry-After was not honoured"


def test_an_analysis_pause_is_answered_with_its_own_button(
    listener, stub, start_sandbox, fast_plan
):
    """No gates in the plan: anyone may answer; the button names the pause, not the phase."""
    box = start_sandbox("healthy")
    nobody = f"http://127.0.0.1:{free_port()}"
    plan = fast_plan(
        tests={"port": 9080},
        steps=[{"weight": 20, "hold": 4}],
        notifications=SLACK,
        analysis={
            "interval": 1,
            "prometheus": {"url": nobody, "timeout": 1, "retries": 0},
            "metrics": [{"name": "request-success-rate", "thresholdRange": {"min": 99}}],
        },
    )
    release = SlackRelease(plan, box, "r-slack-analysis-pause")

    _, message = approval_request(stub, "step-1")
    buttons = next(b for b in message["blocks"] if b["type"] == "actions")
    assert buttons["block_id"].startswith("canary_gate_analysis-step-1-")
    click(listener, stub, "step-1", "U0ANYONE", "canary_reject")

    outcome = release.finish()
    assert isinstance(outcome, ReleaseRolledBack), outcome
    assert "rejected by U0ANYONE: rejected in Slack" in outcome.result.reason
    assert outcome.result.reason.startswith("step-1: analysis inconclusive at step-1: ")
