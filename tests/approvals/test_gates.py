"""Gates against a real Prefect server, the Slack stub and the listener process."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.flow_runs import resume_flow_run

from canary.approvals.decisions import auto_approve
from canary.approvals.store import gate_request
from canary.slack.api import slack_client
from canary.slack.buttons import sign_binding
from canary.slack.thread import SlackNotifier
from tests.approvals.conftest import SIGNING_SECRET
from tests.approvals.gate_flows import GatedRun
from tests.support.slack_stub import BOT_TOKEN, SlackStub, block_actions, send_interaction
from tests.support.waiting import wait_until

APPROVER = "U0APPROVER"
OTHER = "U0OTHER"
INITIATOR = "U0INITIATOR"

pytestmark = pytest.mark.usefixtures("slack_env")


def gate(**extra: Any) -> dict[str, Any]:
    return {"before": "promote", "approvers": {"users": [APPROVER]}, "timeout": "60s", **extra}


@pytest.fixture
def notifier(stub: SlackStub) -> SlackNotifier:
    return SlackNotifier("#releases", slack_client(BOT_TOKEN, stub.url))


def approval_message(stub: SlackStub, index: int = -1) -> tuple[str, dict[str, Any]]:
    """(channel, message) of an approval request with buttons, as it was posted."""

    def found() -> list[tuple[str, dict[str, Any]]]:
        return [
            (c.response["channel"], c.response["message"])
            for c in stub.calls_to("chat.postMessage")
            if any(b["type"] == "actions" for b in c.response["message"]["blocks"])
        ]

    return wait_until(found, 10, message="an approval request with buttons")[index]


def click(
    listener: str, stub: SlackStub, user: str, action: str = "canary_approve", **kw: Any
) -> tuple[int, str]:
    channel, message = approval_message(stub)
    value = kw.pop("value", None) or _button_value(message)
    return send_interaction(
        listener, SIGNING_SECRET, block_actions(user, action, value, channel, message), **kw
    )


def _button_value(message: dict[str, Any]) -> str:
    actions = next(b for b in message["blocks"] if b["type"] == "actions")
    return actions["elements"][0]["value"]


def ephemerals(stub: SlackStub, user: str) -> list[str]:
    return [
        c.params["text"] for c in stub.calls_to("chat.postEphemeral") if c.params["user"] == user
    ]


def wait_ephemeral(stub: SlackStub, user: str, text: str) -> str:
    def seen() -> str | None:
        return next((t for t in ephemerals(stub, user) if text in t), None)

    return wait_until(seen, 10, message=f"an ephemeral {text!r} to {user}")


def test_slack_click_by_an_approver_resumes_the_run(listener, stub, notifier):
    run = GatedRun(gate(), notifier)
    run.wait_paused("gate-promote")
    status, _ = click(listener, stub, APPROVER)
    assert status == 200
    run.passed_at(timeout=30)
    state = run.finish()
    assert state.is_completed(), state
    outcome = run.outcome()
    assert outcome and outcome.decision == "approved" and outcome.approver == APPROVER
    # The listener replaces the clicked message's buttons by who decided.
    channel, message = approval_message(stub)

    def listener_update() -> Any:
        return [
            c
            for c in stub.calls_to("chat.update")
            if c.params["ts"] == message["ts"] and c.params["text"].startswith("Approved by")
        ]

    update = wait_until(listener_update, 5, message="the listener's chat.update")[0]
    assert update.params["text"].startswith(f"Approved by <@{APPROVER}> at ")
    assert not any(b["type"] == "actions" for b in update.params["blocks"])
    assert not any(
        b["type"] == "actions" for b in stub.messages[(channel, message["ts"])]["blocks"]
    )


def test_second_click_after_the_decision_is_already_decided(listener, stub, notifier):
    run = GatedRun(gate(), notifier)
    run.wait_paused("gate-promote")
    channel, message = approval_message(stub)
    payload = block_actions(APPROVER, "canary_approve", _button_value(message), channel, message)
    assert send_interaction(listener, SIGNING_SECRET, payload)[0] == 200
    assert run.finish().is_completed()
    assert send_interaction(listener, SIGNING_SECRET, payload)[0] == 200
    assert "Already decided" in wait_ephemeral(stub, APPROVER, "already approved by")


def test_reject_in_slack_ends_the_run_with_who_and_why(listener, stub, notifier):
    run = GatedRun(gate(), notifier)
    run.wait_paused("gate-promote")
    assert click(listener, stub, APPROVER, "canary_reject")[0] == 200
    state = run.finish()
    assert state.is_failed()
    assert state.message == f"gate before promote rejected by {APPROVER}: rejected in Slack"
    outcome = run.outcome()
    assert outcome and outcome.decision == "rejected" and not outcome.proceed


def test_timeout_ends_the_run_saying_which_gate_timed_out(listener, stub, notifier):
    run = GatedRun(gate(timeout="2s", name="promote check"), notifier)
    run.wait_paused("gate-promote")
    state = run.finish(timeout=20)
    assert state.is_failed()
    assert state.message == "promote check timed out after 2s"
    assert run.server_state().message == "promote check timed out after 2s"
    outcome = run.outcome()
    assert outcome and outcome.decision == "timed-out" and not outcome.proceed
    kinds = [c.params["text"] for c in stub.calls_to("chat.postMessage")]
    assert any("approval-timed-out" in text for text in kinds)
    # A click after the timeout is answered, and changes nothing.
    assert click(listener, stub, APPROVER)[0] == 200
    assert "timed out" in wait_ephemeral(stub, APPROVER, "Already decided")


def test_timeout_with_on_timeout_proceed_goes_on(stub, notifier):
    run = GatedRun(gate(timeout="1s", onTimeout="proceed"), notifier)
    state = run.finish(timeout=20)
    assert state.is_completed()
    assert (
        run.outcome().message
        == "gate before promote timed out after 1s; proceeding as the plan says"
    )


def test_unsigned_forged_and_stale_requests_are_refused(listener, stub, notifier):
    run = GatedRun(gate(), notifier)
    run.wait_paused("gate-promote")
    assert click(listener, stub, APPROVER, signature="v0=" + "0" * 64)[0] == 401
    six_minutes_ago = int(time.time()) - 360
    assert click(listener, stub, APPROVER, timestamp=six_minutes_ago)[0] == 401
    channel, message = approval_message(stub)
    payload = block_actions(APPROVER, "canary_approve", _button_value(message), channel, message)
    status, _ = send_interaction(listener, "not-the-secret", payload)
    assert status == 401
    assert run.server_state().is_paused()
    assert not stub.calls_to("chat.postEphemeral")
    resume_flow_run(run.run_id, run_input={"decision": "reject", "approver": APPROVER})
    assert run.finish().is_failed()


def test_a_non_approver_is_refused_and_the_run_stays_paused(listener, stub, notifier):
    run = GatedRun(gate(), notifier)
    run.wait_paused("gate-promote")
    assert click(listener, stub, OTHER)[0] == 200
    assert f"{OTHER} is not an approver" in wait_ephemeral(stub, OTHER, "not allowed")
    assert run.server_state().is_paused()
    assert gate_request(run.run_id, "promote").status == "waiting"
    assert click(listener, stub, APPROVER)[0] == 200
    assert run.finish().is_completed()


def test_user_group_members_may_decide(listener, stub, notifier):
    stub.usergroups["S0RELEASERS"] = [OTHER]
    run = GatedRun(gate(approvers={"groups": ["S0RELEASERS"]}), notifier)
    run.wait_paused("gate-promote")
    assert click(listener, stub, OTHER)[0] == 200
    assert run.finish().is_completed()
    assert stub.calls_to("usergroups.users.list")[0].params["usergroup"] == "S0RELEASERS"


def test_four_eyes_keeps_the_initiator_from_approving(listener, stub, notifier):
    approvers = {"users": [INITIATOR, APPROVER]}
    run = GatedRun(gate(approvers=approvers, fourEyes=True), notifier, initiator=INITIATOR)
    run.wait_paused("gate-promote")
    assert click(listener, stub, INITIATOR)[0] == 200
    assert "four-eyes" in wait_ephemeral(stub, INITIATOR, "not allowed")
    assert run.server_state().is_paused()
    assert click(listener, stub, APPROVER)[0] == 200
    assert run.finish().is_completed()
    assert run.outcome().approver == APPROVER


def test_an_edited_button_value_is_refused(listener, stub, notifier):
    run = GatedRun(gate(), notifier)
    run.wait_paused("gate-promote")
    _, message = approval_message(stub)
    signed = _button_value(message)
    other_run = "00000000-0000-4000-8000-000000000000"
    edited = signed.replace(run.run_id, other_run)
    assert click(listener, stub, APPROVER, value=edited)[0] == 200
    assert "does not match" in wait_ephemeral(stub, APPROVER, "Not accepted")
    # A value signed with another key is refused the same way.
    forged = sign_binding(run.run_id, "promote", "another-key")
    assert click(listener, stub, APPROVER, value=forged)[0] == 200
    wait_until(lambda: len(ephemerals(stub, APPROVER)) == 2, 10, message="two refusals")
    assert run.server_state().is_paused()
    resume_flow_run(run.run_id, run_input={"decision": "approve", "approver": APPROVER})
    assert run.finish().is_completed()


def test_the_prefect_ui_form_resumes_the_run_like_a_click(stub, notifier):
    run = GatedRun(gate(), notifier)
    run.wait_paused("gate-promote")
    form = {"decision": "approve", "approver": APPROVER, "reason": "looks good"}
    resume_flow_run(run.run_id, run_input=form)
    run.passed_at(timeout=30)
    assert run.finish().is_completed()
    outcome = run.outcome()
    assert outcome.message == f"gate before promote approved by {APPROVER}: looks good"


def test_the_ui_form_from_a_non_approver_pauses_again(stub, notifier):
    run = GatedRun(gate(), notifier)
    run.wait_paused("gate-promote")
    resume_flow_run(run.run_id, run_input={"decision": "approve", "approver": OTHER})
    run.wait_paused("gate-promote-r2")
    request = gate_request(run.run_id, "promote")
    assert request.status == "waiting" and f"{OTHER} is not an approver" in request.note
    resume_flow_run(run.run_id, run_input={"decision": "reject", "approver": APPROVER})
    state = run.finish()
    assert state.is_failed() and "rejected by U0APPROVER" in state.message


def test_a_decided_gate_is_not_asked_again_for_the_same_release(stub, notifier):
    first = GatedRun(gate(), notifier)
    auto_approve(first.run_id, "promote", who="demo", timeout=30)
    assert first.finish().is_completed()
    again = GatedRun(gate(), notifier, release_id=first.release_id)
    assert again.finish(timeout=30).is_completed()
    with get_client(sync_client=True) as client:
        states = client.read_flow_run_states(again.run_id)
    assert not any(s.is_paused() for s in states)
    assert again.outcome().approver == "demo"


def form_description(run: GatedRun, pause_key: str) -> str:
    """The markdown the Prefect UI shows above the Resume form of the run's pause."""
    from prefect.input import keyset_from_paused_state
    from prefect.input.actions import read_flow_run_input

    state = run.wait_paused(pause_key)
    return read_flow_run_input(keyset_from_paused_state(state)["description"], run.run_id)


def test_the_resume_form_says_what_is_decided_and_why_it_asks_again(stub, notifier):
    run = GatedRun(gate(approvers={"users": [APPROVER], "groups": ["S0ONCALL"]}), notifier)

    first = form_description(run, "gate-promote")
    assert first.startswith("### gate before promote\n")
    assert "**reviews** v1 → v2 in `default`" in first
    assert "the canary has **0 %** of the traffic; this gate stands before **promote**" in first
    assert f"**Who may approve:** {APPROVER}, members of the Slack user group S0ONCALL" in first
    assert "<@" not in first and "UTC (1m from when it was asked); then it rolls back." in first
    resume_flow_run(run.run_id, run_input={"decision": "approve", "approver": OTHER})

    again = form_description(run, "gate-promote-r2")
    assert f"> **refused: {OTHER} is not an approver of gate before promote**" in again
    resume_flow_run(run.run_id, run_input={"decision": "approve", "approver": APPROVER})
    assert run.finish().is_completed()


def four_eyes_gate() -> dict[str, Any]:
    return gate(approvers={"users": [APPROVER, OTHER]}, fourEyes=True)


def test_four_eyes_without_an_initiator_needs_two_approvers_in_the_ui(stub, notifier):
    run = GatedRun(four_eyes_gate(), notifier)  # nobody named as the initiator
    run.wait_paused("gate-promote")
    approve = {"decision": "approve", "approver": APPROVER}
    resume_flow_run(run.run_id, run_input=approve)

    second = form_description(run, "gate-promote-r2")
    assert "two different approvers must approve. U0APPROVER approved already." in second
    assert "approved by U0APPROVER (1 of 2)" in second
    resume_flow_run(run.run_id, run_input=approve)  # the same person again
    assert "approved already; four-eyes needs a second" in form_description(run, "gate-promote-r3")
    resume_flow_run(run.run_id, run_input={"decision": "approve", "approver": OTHER})

    assert run.finish().is_completed()
    assert run.outcome().message == f"gate before promote approved by {APPROVER} and {OTHER}"


def test_four_eyes_without_an_initiator_needs_two_approvers_in_slack(listener, stub, notifier):
    run = GatedRun(four_eyes_gate(), notifier)
    run.wait_paused("gate-promote")
    assert click(listener, stub, APPROVER)[0] == 200
    run.wait_paused("gate-promote-r2")
    assert run.server_state().is_paused()
    assert click(listener, stub, APPROVER)[0] == 200  # the button of the request asked again
    assert "approved already" in wait_ephemeral(stub, APPROVER, "not allowed")
    assert run.server_state().is_paused()
    assert click(listener, stub, OTHER)[0] == 200
    assert run.finish().is_completed()
    message = run.outcome().message
    assert message == f"gate before promote approved by {APPROVER} and {OTHER}: approved in Slack"


def test_two_approvers_clicking_at_once_make_one_decision(listener, stub, notifier):
    run = GatedRun(gate(approvers={"users": [APPROVER, OTHER]}), notifier)
    run.wait_paused("gate-promote")
    channel, message = approval_message(stub)
    value = _button_value(message)
    barrier = threading.Barrier(2)

    def at_once(user: str, action: str) -> int:
        payload = block_actions(user, action, value, channel, message)
        barrier.wait(10)
        return send_interaction(listener, SIGNING_SECRET, payload)[0]

    with ThreadPoolExecutor(2) as pool:
        clicks = [
            pool.submit(at_once, APPROVER, "canary_approve"),
            pool.submit(at_once, OTHER, "canary_reject"),
        ]
        assert [c.result() for c in clicks] == [200, 200]

    state = run.finish()
    outcome = run.outcome()
    winner = outcome.approver
    loser = OTHER if winner == APPROVER else APPROVER
    assert state.is_completed() == (winner == APPROVER), (state, outcome)
    request = gate_request(run.run_id, "promote")
    assert (request.decided_by, request.status) == (winner, outcome.decision)
    told = wait_ephemeral(stub, loser, "Already decided")
    assert f"already {outcome.decision} by {winner} at " in told
    assert not [t for t in ephemerals(stub, winner) if "Already decided" in t]
    updates = [c.params["text"] for c in stub.calls_to("chat.update")]
    assert not [t for t in updates if f"by <@{loser}>" in t], updates
