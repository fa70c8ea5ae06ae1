"""Releases started the production way: the canary-release deployment on a worker.

Runs are created as the Prefect UI's Custom run form creates them
(`POST /api/deployments/{id}/create_flow_run`, the form's body), picked up by a real
`prefect worker` process whose environment holds the Slack stub's URL, token and signing
secret; gates are answered by signed clicks through `canary approvals serve`, or by the
Resume form's request. See tests/support/production.py for the parts.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any
from uuid import UUID

import pytest

from canary.notify.prefect_events import EVENT_PREFIX
from canary.plan import plan_from_dict
from canary.plan.versions import pending_release
from canary.planner import canary_weight
from tests.support.approvals import (
    click,
    ephemerals_to,
    form_description,
    request_for,
    resume_as_form,
    wait_paused_at,
)
from tests.support.deployments import (
    RELEASE,
    TRAIN,
    api_request,
    client,
    create_run_as_form,
    deployment,
    post_form,
    state_of,
    wait_final,
)
from tests.support.production import (
    APPROVER,
    GROUP_MEMBER,
    INTRUDER,
    PLANS,
    SIGNING_SECRET,
    TRAIN_PLANS,
    ProductionStack,
)
from tests.support.slack_stub import SlackStub
from tests.support.waiting import wait_until

# The first test also waits for the lane's stack to start (two minutes on a busy machine),
# and each runs a release or two on a worker: more than the suite's 300 s per test.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

APPROVE, REJECT = "canary_approve", "canary_reject"
# What the thread tells of a release with a header route, one step and two gates, in order
# (a hold's analysis rounds are told too, as many as it took; they are not listed here).
TRANSITIONS = [
    "step-1: approval-requested",
    "step-1: approval-given",
    "step-1: phase-started",
    "step-1: weight-changed",
    "step-1: phase-finished",
    "promote: approval-requested",
    "promote: approval-given",
    "promote: weight-changed",
    "promoted",
]
# Four-eyes without an initiator: the first approval at promote asks again, for a second.
TWO_APPROVALS = [
    *TRANSITIONS[:6],
    "promote: approval-requested",
    *TRANSITIONS[6:],
]


def plan_of(name: str) -> Any:
    return plan_from_dict({**PLANS, **TRAIN_PLANS}[name])


# --- Slack ---------------------------------------------------------------------------------


def thread_parent(slack: SlackStub, run_id: UUID | str) -> Any:
    """The release's one parent message (its blocks name the release, the run's id)."""

    def parents() -> list[Any]:
        return [
            c
            for c in slack.calls_to("chat.postMessage")
            if "thread_ts" not in c.params and str(run_id) in str(c.params.get("blocks"))
        ]

    try:
        found = wait_until(parents, 15, interval=0.2, message="the thread parent")
    except AssertionError:
        methods = [c.method for c in slack.calls]
        raise AssertionError(
            f"no Slack thread parent for run {run_id} although it waits at a gate; "
            f"the stub saw {len(methods)} calls: {methods}"
        ) from None
    assert len(found) == 1, f"{len(found)} parent messages for one release"
    return found[0]


def click_at(
    production: ProductionStack, run_id: UUID | str, gate: str, user: str, action: str = APPROVE
) -> tuple[Any, str, dict[str, Any]]:
    """Once the run waits at `gate`, `user` clicks `action` on the gate's latest request.

    The run tells Slack it asks before it pauses, so the latest request is this pause's.
    Returns the Paused state clicked at, and the (channel, message) clicked.
    """
    state = wait_paused_at(run_id, gate, timeout=120)
    channel, message = request_for(production.slack, run_id, gate)
    click(production.listener_url, SIGNING_SECRET, channel, message, user, action)
    return state, channel, message


def approve_in_slack(
    production: ProductionStack, run_id: UUID | str, gate: str, user: str
) -> tuple[str, str]:
    """Wait at `gate`, click Approve as `user`; (channel, ts) of the request clicked."""
    state, channel, message = click_at(production, run_id, gate, user)
    wait_resumed(run_id, state, f"the click of {user} to resume the run at {gate}")
    return channel, message["ts"]


def wait_resumed(run_id: UUID | str, paused: Any, what: str) -> None:
    """The run left the pause `paused` (it runs, or pauses again under another key)."""
    wait_until(
        lambda: state_of(run_id).state_details.pause_key != paused.state_details.pause_key,
        30,
        interval=0.25,
        message=what,
    )


def told(slack: SlackStub, user: str, text: str) -> list[str]:
    """What Slack showed `user` alone, once it contains `text`."""
    return wait_until(
        lambda: (said := ephemerals_to(slack, user)) and any(text in t for t in said) and said,
        20,
        interval=0.2,
        message=f"an answer to {user} saying {text!r} (got {ephemerals_to(slack, user)})",
    )


def check_thread(slack: SlackStub, run_id: UUID | str, expected: list[str]) -> list[str]:
    """One parent updated in place and one reply per transition; returns the replies.

    `expected` are the transitions in order; each is told as often as it is listed, and
    nothing but a hold's analysis rounds is told more than once.
    """
    parent = thread_parent(slack, run_id)
    ts, channel = parent.response["ts"], parent.response["channel"]

    def complete() -> list[str] | None:
        said = [r.params["text"].split(" - ")[0] for r in slack.replies(ts)]
        return said if said and said[-1] == "promoted" else None

    said = wait_until(complete, 20, interval=0.2, message="the 'promoted' reply")
    remaining = iter(said)
    missing = [t for t in expected if t not in remaining]  # in order, as a subsequence
    assert not missing, f"no {missing} replies, in order, in {said}"
    counted = {t: said.count(t) for t in set(said) if not t.endswith(": analysis")}
    wrong = {t: n for t, n in counted.items() if n != max(1, expected.count(t))}
    assert not wrong, f"transitions told other than once per transition: {wrong} in {said}"
    updates = [c for c in slack.calls_to("chat.update") if c.params["ts"] == ts]
    assert len(updates) == len(said) - 1  # the parent follows every transition after the first
    shown = str(slack.messages[(channel, ts)]["blocks"])
    assert "*Status*\\npromoted" in shown and "\\n100%" in shown, shown
    return said


def check_closed(slack: SlackStub, channel: str, ts: str, user: str) -> None:
    """A decided request has lost its buttons and says who decided."""
    blocks = slack.messages[(channel, ts)]["blocks"]
    assert not any(b["type"] == "actions" for b in blocks), blocks
    assert user in str(blocks), blocks


def check_promoted(production: ProductionStack, plan: Any) -> None:
    """The VirtualService, read back from the cluster, sends everything to the canary."""
    vs = production.slot.get("virtualservices", plan.service)
    assert canary_weight(plan, vs) == 100, vs
    assert production.slot.get("deployments", plan.stable_deployment) is None


def check_rolled_back(production: ProductionStack, state: Any, plan_name: str) -> None:
    plan = plan_of(plan_name)
    vs = production.slot.get("virtualservices", plan.service)
    assert state.is_failed(), f"{state.name}: {state.message}"
    assert "promote to 100% timed out" in (state.message or ""), state.message
    assert canary_weight(plan, vs) == 0, vs
    assert production.slot.get("deployments", plan.stable_deployment) is not None


def release_events(run_id: UUID | str) -> list[dict[str, Any]]:
    """The release's events about this run, as `POST /api/events/filter` gives them."""
    query = {
        "filter": {
            "any_resource": {"id": [f"prefect.flow-run.{run_id}"]},
            "event": {"prefix": [EVENT_PREFIX]},
            "order": "ASC",
        },
        "limit": 50,  # the most the API gives in one page; a release emits some 25
    }
    response = api_request("POST", "/events/filter", json=query)
    response.raise_for_status()
    return response.json()["events"]


# --- the release through Slack -------------------------------------------------------------


def test_a_release_created_as_the_form_does_is_told_and_approved_in_slack(
    production, cluster, slack, started_runs, explain
):
    """The form names its initiator: they may not pass the fourEyes gate, someone else may."""
    run = create_run_as_form(RELEASE, {"plan": "e2e-reviews.yaml", "initiator": GROUP_MEMBER})
    started_runs.append(run)

    step = approve_in_slack(production, run, "step-1", APPROVER)
    asked, *_ = click_at(production, run, "promote", GROUP_MEMBER)
    refused = told(slack, GROUP_MEMBER, "started this release")
    assert state_of(run).state_details.pause_key == asked.state_details.pause_key, refused
    promote = approve_in_slack(production, run, "promote", APPROVER)

    state = wait_final(run, 90)
    assert state.is_completed(), f"{state.name}: {state.message}\n{explain()}"
    check_promoted(production, plan_of("e2e-reviews.yaml"))
    said = check_thread(slack, run, TRANSITIONS)
    check_closed(slack, *step, APPROVER)
    check_closed(slack, *promote, APPROVER)
    # Every transition is also a Prefect event about the release, labelled with it.
    told_kinds = Counter(reply.split(": ")[-1] for reply in said)
    events = wait_until(
        lambda: (found := release_events(run)) and len(found) >= len(said) and found,
        30,
        interval=0.5,
        message=f"{len(said)} release events of run {run}",
    )
    assert Counter(e["event"].removeprefix(EVENT_PREFIX) for e in events) == told_kinds
    for event in events:
        labels = set(event["resource"].values())
        assert {"default", "reviews", "v1", "v2"} <= labels, event["resource"]


def test_a_release_train_child_is_told_and_approved_in_slack(
    production, cluster, slack, started_runs, explain
):
    """Nobody started the train's release: its fourEyes gate takes two different approvers."""
    train = create_run_as_form(TRAIN, {"configs": str(production.train_configs)})
    started_runs.append(train)
    state = wait_final(train, 90)
    assert state.is_completed(), f"{state.name}: {state.message}\n{explain()}"
    child = train_child(train)
    started_runs.append(child)

    approve_in_slack(production, child, "step-1", APPROVER)
    first = approve_in_slack(production, child, "promote", APPROVER)
    second = approve_in_slack(production, child, "promote", GROUP_MEMBER)

    state = wait_final(child, 90)
    assert state.is_completed(), f"{state.name}: {state.message}\n{explain()}"
    check_promoted(production, pending_release(plan_of("reviews.yaml"), "reviews.yaml"))
    check_thread(slack, child, TWO_APPROVALS)
    assert first != second, "the second approval was asked in the first request's message"
    check_closed(slack, *first, APPROVER)
    check_closed(slack, *second, GROUP_MEMBER)


def train_child(train_run: UUID) -> UUID:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId

    def children() -> list[Any]:
        with client() as c:
            return c.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[train_run])
                )
            )

    runs = wait_until(children, 30, interval=0.5, message="the train's release run")
    assert len(runs) == 1, [r.name for r in runs]
    assert "release-train" in runs[0].tags, runs[0].tags
    return runs[0].id


# --- four-eyes -----------------------------------------------------------------------------


def test_four_eyes_a_lone_approver_in_slack_does_not_promote(
    production, cluster, slack, started_runs, explain
):
    """Nobody said who started the release: one person alone still cannot promote it."""
    run = create_run_as_form(RELEASE, {"plan": "e2e-four-eyes.yaml"})
    started_runs.append(run)
    approve_in_slack(production, run, "step-1", APPROVER)

    first = approve_in_slack(production, run, "promote", APPROVER)
    asked, channel, message = click_at(production, run, "promote", APPROVER)
    refused = told(slack, APPROVER, "approved already; four-eyes needs a second")

    assert (channel, message["ts"]) != first, "no new request after the first approval"
    assert state_of(run).state_details.pause_key == asked.state_details.pause_key, refused
    state = wait_final(run, 90)
    check_rolled_back(production, state, "e2e-four-eyes.yaml")


def test_the_resume_form_tells_a_refused_decision_and_a_lone_approver_does_not_promote(
    production, cluster, started_runs
):
    """The Resume form's request, as people fill it in; the re-opened form says why."""
    run = create_run_as_form(RELEASE, {"plan": "e2e-four-eyes.yaml"})
    started_runs.append(run)

    intruder = answer_in_form(run, "step-1", INTRUDER)
    shown = asked_again(run, "step-1", intruder)
    assert f"refused: {INTRUDER} is not an approver of checked the page" in shown, shown
    answer_in_form(run, "step-1", APPROVER, after=intruder)

    first = answer_in_form(run, "promote", APPROVER)
    shown = asked_again(run, "promote", first)
    assert f"approved by {APPROVER} (1 of 2)" in shown, shown
    second = answer_in_form(run, "promote", APPROVER, after=first)
    shown = asked_again(run, "promote", second)
    assert f"refused: {APPROVER} approved already; four-eyes needs a second" in shown, shown

    state = wait_final(run, 90)
    check_rolled_back(production, state, "e2e-four-eyes.yaml")


def answer_in_form(run: UUID, gate: str, approver: str, after: Any = None) -> Any:
    """Approve in the Resume form once the run waits at `gate` (in a pause after `after`).

    Returns the Paused state answered.
    """
    not_key = after.state_details.pause_key if after is not None else None
    asked = wait_paused_at(run, gate, not_key=not_key, timeout=120)
    answer = resume_as_form(run, {"decision": "approve", "approver": approver, "reason": ""})
    assert answer["status"] == "ACCEPT", answer
    return asked


def asked_again(run: UUID, gate: str, answered: Any) -> str:
    """The description of the form the run shows when it asks at `gate` again."""
    again = wait_paused_at(run, gate, not_key=answered.state_details.pause_key, timeout=60)
    # The pause's description is an input of its own, written beside the Paused state.
    return wait_until(
        lambda: form_description(again),
        60,
        interval=0.5,
        message=f"the re-opened Resume form at {gate} to have its description",
    )


# --- the form's parameters -------------------------------------------------------------------


def test_a_mistyped_plan_path_is_refused_when_the_run_is_created(production):
    response = post_form(RELEASE, {"plan": "configs/bookinfo-review.yaml"})

    assert response.status_code == 409, (
        f"the run was created ({response.status_code}): only its start will tell the path "
        "is not a plan"
    )
    assert "plan" in response.text and "bookinfo-review.yaml" in response.text, response.text


def test_without_the_schema_check_a_mistyped_plan_path_fails_in_one_line(production, started_runs):
    """The form's "Enforce Parameter Schema" switch off: the run itself names the path."""
    response = post_form(RELEASE, {"plan": "configs/bookinfo-review.yaml"}, enforce=False)
    assert response.status_code == 201, response.text
    run = UUID(response.json()["id"])
    started_runs.append(run)

    state = wait_final(run, 90)

    assert state.is_failed(), f"{state.name}: {state.message}"
    assert "bookinfo-review.yaml" in state.message and "\n" not in state.message, state.message


def test_every_form_field_has_a_readable_title_and_a_description_the_ui_shows_whole(production):
    schema = deployment(RELEASE).parameter_openapi_schema
    fields = [("", name, prop) for name, prop in schema["properties"].items()]
    for model, definition in schema.get("definitions", {}).items():
        fields += [(model, name, prop) for name, prop in definition.get("properties", {}).items()]

    unreadable = [
        f"{model}.{name}: {prop.get('title')!r}"
        for model, name, prop in fields
        if not readable_title(name, prop.get("title"))
    ]
    # The legacy UI renders descriptions as markdown and drops anything that reads as HTML.
    cut = [
        f"{model}.{name}: {prop['description']!r}"
        for model, name, prop in fields
        if re.search(r"<[^>]*>", prop.get("description", ""))
    ]
    assert not unreadable, f"{len(unreadable)} fields without a readable title: {unreadable}"
    assert not cut, f"descriptions the UI shows cut: {cut}"


def readable_title(name: str, title: str | None) -> bool:
    """A title of words: not missing, no snake_case, not a camelCase name run together."""
    if not title:
        return False
    mashed = re.search(r"[a-z][A-Z]", name) and title == name.title()
    return "_" not in title and not mashed
