"""Releases started the production way: the canary-release deployment on a worker.

Runs are created as the Prefect UI's Custom run form creates them
(`POST /api/deployments/{id}/create_flow_run`, the form's body), picked up by a real
`prefect worker` process whose environment holds the Slack stub's URL, token and signing
secret; gates are answered by signed clicks through `canary approvals serve`, or by the
Resume form's request. See tests/support/production.py for the parts.
"""

from __future__ import annotations

import re
from typing import Any
from uuid import UUID

import pytest

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
    FINAL,
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

pytestmark = pytest.mark.e2e

APPROVE, REJECT = "canary_approve", "canary_reject"
# The transitions of a release with a header route, one step and two gates, in order.
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


def approve_in_slack(
    production: ProductionStack, run_id: UUID | str, gate: str, user: str
) -> tuple[str, str]:
    """Wait at `gate`, click Approve as `user`; (channel, ts) of the request clicked."""
    state = wait_paused_at(run_id, gate, timeout=120)
    channel, message = request_for(production.slack, run_id, gate)
    click(production.listener_url, SIGNING_SECRET, channel, message, user, APPROVE)
    wait_until(
        lambda: state_of(run_id).state_details.pause_key != state.state_details.pause_key,
        30,
        interval=0.25,
        message=f"the click of {user} to resume the run at {gate}",
    )
    return channel, message["ts"]


def check_thread(slack: SlackStub, run_id: UUID | str) -> list[str]:
    """One parent updated in place and one reply per transition; returns the replies."""
    parent = thread_parent(slack, run_id)
    ts, channel = parent.response["ts"], parent.response["channel"]

    def complete() -> list[str] | None:
        said = [r.params["text"].split(" - ")[0] for r in slack.replies(ts)]
        return said if said and said[-1] == "promoted" else None

    said = wait_until(complete, 20, interval=0.2, message="the 'promoted' reply")
    remaining = iter(said)
    missing = [t for t in TRANSITIONS if t not in remaining]  # in order, as a subsequence
    assert not missing, f"no {missing} replies, in order, in {said}"
    repeated = {t for t in said if said.count(t) > 1}
    assert not repeated, f"transitions told twice: {repeated} in {said}"
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
    vs = production.slot.get("virtualservices", plan.service)
    assert canary_weight(plan, vs) == 100, vs
    assert production.slot.get("deployments", plan.stable_deployment) is None


def release_events(run_id: UUID | str) -> list[dict[str, Any]]:
    """The run's own events (not Prefect's), as `POST /api/events/filter` gives them."""
    query = {
        "filter": {
            "any_resource": {"id": [f"prefect.flow-run.{run_id}"]},
            "event": {"exclude_prefix": ["prefect."]},
            "order": "ASC",
        },
        "limit": 200,
    }
    response = api_request("POST", "/events/filter", json=query)
    response.raise_for_status()
    return response.json()["events"]


# --- the release through Slack -------------------------------------------------------------


def test_a_release_created_as_the_form_does_is_told_and_approved_in_slack(
    production, cluster, slack, started_runs, explain
):
    run = create_run_as_form(RELEASE, {"plan": "e2e-reviews.yaml"})
    started_runs.append(run)

    step = approve_in_slack(production, run, "step-1", APPROVER)
    promote = approve_in_slack(production, run, "promote", GROUP_MEMBER)

    state = wait_final(run, 90)
    assert state.is_completed(), f"{state.name}: {state.message}\n{explain()}"
    check_promoted(production, plan_of("e2e-reviews.yaml"))
    said = check_thread(slack, run)
    check_closed(slack, *step, APPROVER)
    check_closed(slack, *promote, GROUP_MEMBER)
    # Every transition is also a Prefect event about the release, labelled with it.
    events = wait_until(
        lambda: (found := release_events(run)) and len(found) >= len(said) and found,
        20,
        interval=0.5,
        message=f"{len(said)} release events of run {run}",
    )
    for event in events:
        labels = set(event["resource"].values())
        assert {"default", "reviews", "v1", "v2"} <= labels, event["resource"]


def test_a_release_train_child_is_told_and_approved_in_slack(
    production, cluster, slack, started_runs, explain
):
    train = create_run_as_form(TRAIN, {"configs": str(production.train_configs)})
    started_runs.append(train)
    state = wait_final(train, 90)
    assert state.is_completed(), f"{state.name}: {state.message}\n{explain()}"
    child = train_child(train)
    started_runs.append(child)

    approve_in_slack(production, child, "step-1", APPROVER)
    approve_in_slack(production, child, "promote", GROUP_MEMBER)

    state = wait_final(child, 90)
    assert state.is_completed(), f"{state.name}: {state.message}\n{explain()}"
    check_promoted(production, pending_release(plan_of("reviews.yaml"), "reviews.yaml"))
    check_thread(slack, child)


def train_child(train_run: UUID) -> UUID:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId

    def children() -> list[Any]:
        with client() as c:
            by_parent = c.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[train_run])
                )
            )
            by_tag = [r for r in c.read_flow_runs() if "release-train" in r.tags]
        return by_parent or by_tag

    runs = wait_until(children, 30, interval=0.5, message="the train's release run")
    assert len(runs) == 1, [r.name for r in runs]
    return runs[0].id


# --- four-eyes -----------------------------------------------------------------------------


def test_four_eyes_a_lone_approver_in_slack_does_not_promote(
    production, cluster, slack, started_runs, explain
):
    """Nobody said who started the release: one person alone still cannot promote it."""
    run = create_run_as_form(RELEASE, {"plan": "e2e-four-eyes.yaml"})
    started_runs.append(run)
    approve_in_slack(production, run, "step-1", APPROVER)

    clicks = answer_alone(
        run,
        lambda: _click_promote(production, run),
    )

    state = wait_final(run, 90)
    check_not_promoted(production, state, clicks, explain)
    if clicks:
        told = wait_until(
            lambda: ephemerals_to(slack, APPROVER), 10, message=f"an answer to {APPROVER}"
        )
        assert any("four-eyes" in t or "second" in t or "someone else" in t for t in told), told


def test_four_eyes_a_lone_approver_in_the_form_does_not_promote(
    production, cluster, started_runs, explain
):
    """The Resume form's request, as one person fills it in at every gate."""
    run = create_run_as_form(RELEASE, {"plan": "e2e-four-eyes.yaml"})
    started_runs.append(run)
    wait_paused_at(run, "step-1", timeout=120)
    accepted = resume_as_form(run, {"decision": "approve", "approver": APPROVER, "reason": ""})
    assert accepted["status"] == "ACCEPT", accepted

    def approve_in_form() -> None:
        answer = resume_as_form(run, {"decision": "approve", "approver": APPROVER, "reason": ""})
        assert answer["status"] in ("ACCEPT", "REJECT"), answer

    clicks = answer_alone(run, approve_in_form)

    state = wait_final(run, 90)
    check_not_promoted(production, state, clicks, explain)


def answer_alone(run: UUID, approve: Any, attempts: int = 3) -> int:
    """The approver answers the promote gate each time it asks, until the run ends.

    Returns how often they approved (0 when the run ended before asking at promote, as a
    release that needs to know its initiator may).
    """
    approved, key = 0, None
    while approved < attempts:
        try:
            state = wait_paused_at(run, "promote", not_key=key, timeout=60)
        except AssertionError:
            if state_of(run).type.value in FINAL:
                return approved
            raise
        approve()
        approved += 1
        key = state.state_details.pause_key
    return approved


def _click_promote(production: ProductionStack, run: UUID) -> None:
    channel, message = request_for(production.slack, run, "promote")
    click(production.listener_url, SIGNING_SECRET, channel, message, APPROVER, APPROVE)


def check_not_promoted(production: ProductionStack, state: Any, clicks: int, explain) -> None:
    plan = plan_of("e2e-four-eyes.yaml")
    vs = production.slot.get("virtualservices", plan.service)
    assert not state.is_completed(), (
        f"a lone approver ({APPROVER}, {clicks} approvals) promoted the release: "
        f"{state.name}: {state.message}"
    )
    assert canary_weight(plan, vs) == 0, vs
    assert production.slot.get("deployments", plan.stable_deployment) is not None
    if clicks == 0:  # refused before the gate: it must say it needs the initiator
        assert "initiator" in (state.message or ""), f"{state.message}\n{explain()}"


# --- the Resume form's request ---------------------------------------------------------------


def test_a_refused_decision_is_told_in_the_reopened_form(production, cluster, started_runs):
    run = create_run_as_form(RELEASE, {"plan": "e2e-reviews.yaml"})
    started_runs.append(run)
    asked = wait_paused_at(run, "step-1", timeout=120)

    answer = resume_as_form(run, {"decision": "approve", "approver": INTRUDER, "reason": ""})

    if answer["status"] == "REJECT":  # refused by the form's own schema: the form says why
        assert INTRUDER in answer["details"]["reason"], answer
        return
    again = wait_paused_at(run, "step-1", not_key=asked.state_details.pause_key, timeout=30)
    shown = form_description(again)
    assert shown is not None, "the re-opened Resume form has no description"
    assert re.search(rf"refused: {INTRUDER} is not an approver of \S", shown), shown


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
