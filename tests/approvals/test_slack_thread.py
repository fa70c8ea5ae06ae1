"""One Slack thread per release, kept up to date, and Slack trouble never stalls a release."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from prefect import flow
from prefect.flow_runs import resume_flow_run

from canary.events import EventKind, ReleaseEvent
from canary.notify import current_notifier, notifying_here
from canary.slack.api import slack_client
from canary.slack.thread import SlackNotifier, slack_notifier_from_env
from tests.approvals.gate_flows import GatedRun
from tests.support.events import release_event
from tests.support.slack_stub import BOT_TOKEN, SlackStub
from tests.support.waiting import wait_until

APPROVER = "U0APPROVER"
GATE = {"before": "promote", "approvers": {"users": [APPROVER]}, "timeout": "60s"}
# phase-started, phase-finished, approval-requested, approval-given, weight-changed
EVENTS = 5

pytestmark = pytest.mark.usefixtures("slack_env")


@pytest.fixture
def notifier(stub: SlackStub, monkeypatch: pytest.MonkeyPatch) -> SlackNotifier:
    monkeypatch.setenv("PREFECT_UI_URL", "http://127.0.0.1:4200")
    return SlackNotifier("#releases", slack_client(BOT_TOKEN, stub.url))


def approve(run: GatedRun) -> None:
    run.wait_paused("gate-promote")
    resume_flow_run(run.run_id, run_input={"decision": "approve", "approver": APPROVER})


def parents(stub: SlackStub) -> list[Any]:
    return [c for c in stub.calls_to("chat.postMessage") if "thread_ts" not in c.params]


def test_one_parent_per_release_updated_in_place_with_one_reply_per_transition(stub, notifier):
    run = GatedRun(GATE, notifier)
    approve(run)
    assert run.finish().is_completed()
    wait_until(
        lambda: len(stub.calls_to("chat.postMessage")) == 1 + EVENTS, 10, message="every reply"
    )
    [parent] = parents(stub)
    ts, channel = parent.response["ts"], parent.response["channel"]
    replies = stub.replies(ts)
    kinds = [r.params["text"].split(" - ")[0] for r in replies]
    assert kinds == [
        "header-route: phase-started",
        "header-route: phase-finished",
        "promote: approval-requested",
        "promote: approval-given",
        "step-1: weight-changed",
    ]
    parent_updates = [c for c in stub.calls_to("chat.update") if c.params["ts"] == ts]
    assert len(parent_updates) == EVENTS - 1
    shown = str(stub.messages[(channel, ts)]["blocks"])
    assert (
        "*Phase*\\nstep-1" in shown
        and "*Canary v2*\\n20%" in shown
        and "*Stable v1*\\n80%" in shown
    )
    assert f"http://127.0.0.1:4200/flow-runs/flow-run/{run.run_id}" in shown
    # The request loses its buttons once decided, and says how.
    request = replies[2].response
    closed = stub.messages[(channel, request["ts"])]
    assert not any(b["type"] == "actions" for b in closed["blocks"])
    assert f"approved by {APPROVER}" in str(closed["blocks"])


def test_each_release_gets_its_own_thread(stub, notifier):
    first, second = GatedRun(GATE, notifier), None
    approve(first)
    first.finish()
    second = GatedRun(GATE, notifier)
    approve(second)
    second.finish()
    wait_until(
        lambda: len(stub.calls_to("chat.postMessage")) == 2 * (1 + EVENTS),
        10,
        message="both threads",
    )
    a, b = parents(stub)
    assert first.release_id in str(a.params["blocks"]) and second.release_id in str(
        b.params["blocks"]
    )
    assert len(stub.replies(a.response["ts"])) == len(stub.replies(b.response["ts"])) == EVENTS


def test_rate_limits_and_server_errors_are_retried_and_the_release_completes(stub, notifier):
    stub.fail_next(429, 1, retry_after=1)
    stub.fail_next(500, 1)
    run = GatedRun(GATE, notifier)
    approve(run)
    assert run.finish().is_completed()
    wait_until(
        lambda: len(stub.calls_to("chat.postMessage")) == 1 + EVENTS,
        15,
        message="every message, after retries",
    )
    limited, failed = stub.calls_to("chat.postMessage", ok=False)
    assert (limited.status, failed.status) == (429, 500)
    first_ok = stub.calls_to("chat.postMessage")[0]
    assert first_ok.at - limited.at >= 1.0, "Retry-After was not honoured"
    assert len(parents(stub)) == 1


def test_slack_down_does_not_stall_or_fail_the_release(stub, notifier):
    stub.fail_next(500, 1000)
    run = GatedRun(GATE, notifier)
    approve(run)
    assert run.finish().is_completed()
    # One event's call and its two retries failed; the others skipped Slack while it was down.
    assert len(stub.calls) == 3, [c.method for c in stub.calls]
    assert not stub.calls_to("chat.postMessage")
    stub.reset()


def event(
    kind: EventKind, phase: str, weight: int | None = None, release_id: str = "r1"
) -> ReleaseEvent:
    return release_event(kind, release_id, phase=phase, canary_weight=weight)


def test_the_notifier_never_raises_and_catches_up_after_an_outage(stub, notifier):
    notifier.cooldown = 0.3
    stub.fail_next(500, 3)  # one call and its two retries
    notifier.notify(event(EventKind.PHASE_STARTED, "isolate"))
    assert len(stub.calls) == 3 and not stub.calls_to("chat.postMessage")
    notifier.notify(event(EventKind.WEIGHT_CHANGED, "step-1", 20))  # skipped: Slack just failed
    assert len(stub.calls) == 3
    time.sleep(0.3)  # the cooldown itself
    notifier.notify(event(EventKind.PHASE_FINISHED, "step-1"))
    [parent, reply] = stub.calls_to("chat.postMessage")
    assert "*Canary v2*\\n20%" in str(parent.params["blocks"])
    assert reply.params["thread_ts"] == parent.response["ts"]


def test_without_slack_configured_nothing_is_sent(monkeypatch):
    monkeypatch.delenv("SLACK_BOT_TOKEN", raising=False)
    monkeypatch.setattr("canary.slack.api.secret_value", lambda block: None)
    assert slack_notifier_from_env("#releases") is None


def test_the_bot_token_may_come_from_a_prefect_secret(stub, monkeypatch):
    from prefect.blocks.system import Secret

    Secret(value=BOT_TOKEN).save("slack-bot-token", overwrite=True)
    monkeypatch.delenv("SLACK_BOT_TOKEN", raising=False)
    notifier = slack_notifier_from_env("#releases")
    assert notifier is not None
    assert notifier.client.token == BOT_TOKEN and notifier.client.base_url == stub.url


# --- a release resumed by another process ------------------------------------------------


@flow(name="slack-thread-events", persist_result=False)
def post_events(release_id: str, kinds: list[str]) -> None:
    """Events of `release_id` sent from a flow run, as a release process sends them."""
    for kind in kinds:
        current_notifier().notify(event(EventKind(kind), "step-1", 20, release_id))


def run_in_process(stub: SlackStub, release_id: str, kinds: list[str]) -> list[Any]:
    """A fresh notifier (another process's) sends `kinds` in a flow run; its Slack calls."""
    before, expected = len(stub.calls), len(all_replies(stub)) + len(kinds)
    with notifying_here(SlackNotifier("#releases", slack_client(BOT_TOKEN, stub.url))):
        post_events(release_id, kinds)
    wait_until(lambda: len(all_replies(stub)) == expected, 10, message="every reply")
    return stub.calls[before:]


def all_replies(stub: SlackStub) -> list[Any]:
    return [c for c in stub.calls_to("chat.postMessage") if "thread_ts" in c.params]


def test_a_resumed_release_carries_on_in_its_thread(stub):
    release = f"rel-{uuid.uuid4().hex[:10]}"
    run_in_process(stub, release, ["phase-started", "weight-changed", "phase-finished"])
    [parent] = parents(stub)
    ts, channel = parent.response["ts"], parent.response["channel"]
    resumed = run_in_process(stub, release, ["phase-started", "promoted"])
    assert parents(stub) == [parent]
    replies = [c for c in resumed if c.method == "chat.postMessage"]
    assert [r.params.get("thread_ts") for r in replies] == [ts, ts]
    updates = [c for c in resumed if c.method == "chat.update"]
    assert [(u.params["channel"], u.params["ts"]) for u in updates] == [(channel, ts)] * 2
    assert "promoted" in stub.messages[(channel, ts)]["text"]


def test_other_releases_still_get_their_own_thread(stub):
    first, second = (f"rel-{uuid.uuid4().hex[:10]}" for _ in range(2))
    run_in_process(stub, first, ["phase-started", "weight-changed"])
    run_in_process(stub, second, ["phase-started", "weight-changed"])
    a, b = parents(stub)
    assert first in str(a.params["blocks"]) and second in str(b.params["blocks"])
    assert len(stub.replies(a.response["ts"])) == len(stub.replies(b.response["ts"])) == 2


def test_prefect_variable_trouble_does_not_keep_the_thread_from_slack(stub, monkeypatch):
    def broken(*args: Any) -> Any:
        raise ConnectionError("Prefect API unreachable")

    monkeypatch.setattr("canary.slack.thread.load", broken)
    monkeypatch.setattr("canary.slack.thread.store", broken)
    calls = run_in_process(stub, f"rel-{uuid.uuid4().hex[:10]}", ["phase-started", "promoted"])
    [parent] = parents(stub)
    assert [c.params.get("thread_ts") for c in calls if c.method == "chat.postMessage"] == [
        None,
        parent.response["ts"],
        parent.response["ts"],
    ]


def test_outside_a_flow_run_the_thread_is_kept_in_memory_only(stub, notifier, monkeypatch):
    touched: list[Any] = []
    monkeypatch.setattr("canary.slack.thread.load", lambda *a: touched.append(a))
    monkeypatch.setattr("canary.slack.thread.store", lambda *a: touched.append(a))
    notifier.notify(event(EventKind.PHASE_STARTED, "isolate"))
    notifier.notify(event(EventKind.PHASE_FINISHED, "isolate"))
    [parent] = parents(stub)
    assert len(stub.replies(parent.response["ts"])) == 2
    assert touched == []
