"""The Prefect UI in headless Chromium, as a person uses it to release and to approve.

The UI is Prefect's default one (served under /v2); the legacy UI (under /) is opened where
it renders differently: it shows field descriptions as markdown. On failure the message
names a directory with screenshots of every step and the page's HTML.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from playwright.sync_api import expect

from canary.plan import plan_from_dict
from canary.planner import canary_weight
from tests.support.approvals import wait_paused_at
from tests.support.browser import Evidence, chromium_context, submit
from tests.support.deployments import RELEASE, client, deployment, wait_final
from tests.support.production import (
    APPROVER,
    GROUP,
    GROUP_MEMBER,
    PLANS,
    PROMOTE_GATE,
    STEP_GATE,
)
from tests.support.waiting import wait_until

# The first test also waits for the lane's stack to start (two minutes on a busy machine),
# and each runs a release or two on a worker: more than the suite's 300 s per test.
pytestmark = [pytest.mark.browser, pytest.mark.timeout(900)]

PLAN_FILE = "e2e-reviews.yaml"


@pytest.fixture
def evidence(production) -> Iterator[Evidence]:
    """A page, and a directory for its screenshots, kept when the test fails."""
    directory = Path(tempfile.mkdtemp(prefix="canary-browser-"))
    with chromium_context() as context:
        page = context.new_page()
        page.set_default_timeout(30_000)
        found = Evidence(page, directory)
        yield found
    if not found.failed:
        shutil.rmtree(directory, ignore_errors=True)


def ui(production, path: str) -> str:
    return f"{production.server.url}/v2{path}"


# --- starting a release from the Custom run form -------------------------------------------


def open_custom_run_form(production, page: Any) -> None:
    """From the deployment's page: Run, then Custom run, as a person gets there."""
    page.goto(ui(production, f"/deployments/deployment/{deployment(RELEASE).id}"))
    page.get_by_role("button", name="Run", exact=True).first.click()
    page.get_by_text("Custom run").click()
    page.get_by_text("Parameters", exact=True).wait_for()


def plan_field(page: Any) -> Any:
    """The form's first parameter, the plan: its label, description, tabs and input."""
    label = page.locator("label").filter(has_text=re.compile(r"^plan", re.I)).first
    return page.locator("div.group").filter(has=label).first


def plan_file_choice(page: Any) -> Any:
    """The plan field's select of plan files (its first tab; the second is a plan inline)."""
    field = plan_field(page)
    field.get_by_role("tab", name="Plan file").click()
    return field.get_by_role("button", name="Select Plan file")


def choose_plan_file(page: Any, name: str) -> None:
    plan_file_choice(page).click()
    page.get_by_role("option", name=name, exact=True).click()


def release_runs() -> set[UUID]:
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    of_release = DeploymentFilter(id=DeploymentFilterId(any_=[deployment(RELEASE).id]))
    with client() as c:
        return {run.id for run in c.read_flow_runs(deployment_filter=of_release)}


def new_run(before: set[UUID]) -> UUID:
    """The one release run created since `before` was taken."""
    created = wait_until(lambda: release_runs() - before, 90, interval=0.5, message="a new run")
    assert len(created) == 1, created
    return created.pop()


# --- the Resume form ------------------------------------------------------------------------


def open_resume_form(production, page: Any, run: UUID) -> Any:
    page.goto(ui(production, f"/runs/flow-run/{run}"))
    page.get_by_role("button", name="Open menu").first.click()
    page.get_by_role("menuitem", name="Resume").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_text("Decision", exact=True).wait_for()
    return dialog


def description_of(dialog: Any) -> str:
    """The markdown Prefect renders above the form's fields, once loaded (until then the
    page shows an empty placeholder where it goes)."""
    shown = dialog.locator(".prose").first
    expect(shown).to_contain_text(re.compile(r"\S"), timeout=60_000)
    return shown.inner_text()


def choose(page: Any, dialog: Any, field: str, value: str) -> None:
    """Choose `value` in the select of the form's `field`."""
    dialog.get_by_role("button", name=f"Select {field}").click()
    page.get_by_role("option", name=value, exact=True).click()


def approve_in_form(page: Any, dialog: Any, approver: str) -> None:
    choose(page, dialog, "Decision", "approve")
    dialog.get_by_label("Approver", exact=True).fill(approver)
    resume = dialog.get_by_role("button", name="Resume")
    answer = submit(page, resume, re.compile(r"/api/flow_runs/[^/]+/resume$"))
    assert answer.ok, f"the Resume form was refused: {answer.status} {answer.text()}"
    page.get_by_text("Flow run resumed").wait_for()


def check_gate_description(shown: str, gate: dict[str, Any], phase: str, weight: int) -> None:
    """What the person must read before deciding: which gate, where, who, until when."""
    assert shown, "the Resume form shows no description above its fields"
    assert gate["name"] in shown, f"the gate's name is not shown: {shown!r}"
    assert re.search(rf"stands before {phase}\b", shown), f"no phase {phase}: {shown!r}"
    assert re.search(rf"\b{weight} ?%", shown), f"the canary's weight {weight}% is not shown"
    assert APPROVER in shown, f"who may approve is not shown: {shown!r}"
    assert "<@" not in shown and "<!subteam" not in shown, f"raw Slack markup: {shown!r}"
    assert re.search(r"Deadline: \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", shown), shown
    assert re.search(r"then it rolls back", shown), f"nothing on a timeout: {shown!r}"


def test_a_release_from_the_custom_run_form_is_approved_in_the_resume_form(
    production, cluster, started_runs, evidence
):
    page = evidence.page
    with evidence.on_failure():
        open_custom_run_form(production, page)
        choose_plan_file(page, PLAN_FILE)
        evidence.shot("custom-run-form")
        before = release_runs()
        page.keyboard.press("Tab")  # leave the plan field: the form takes its value
        button = page.get_by_role("button", name="Submit")
        answer = submit(page, button, re.compile(r"/api/deployments/[^/]+/create_flow_run$"))
        assert answer.ok, f"the Custom run form was refused: {answer.status} {answer.text()}"
        page.wait_for_url(re.compile(r"/deployments/deployment/[^/]+(\?.*)?$"), timeout=90_000)
        run = new_run(before)
        assert str(run) == answer.json()["id"], (run, answer.json())
        started_runs.append(run)

        asked = wait_paused_at(run, "step-1", timeout=180)
        dialog = open_resume_form(production, page, run)
        evidence.shot("resume-form-step-1")
        check_gate_description(description_of(dialog), STEP_GATE, "step-1", 0)
        approve_in_form(page, dialog, APPROVER)

        # Nobody was named as the initiator: the fourEyes gate takes two approvers.
        asked = wait_paused_at(run, "promote", timeout=180)
        dialog = open_resume_form(production, page, run)
        evidence.shot("resume-form-promote")
        shown = description_of(dialog)
        check_gate_description(shown, PROMOTE_GATE, "promote", 20)
        assert f"members of the Slack user group {GROUP}" in shown, shown
        assert "two different approvers must approve" in shown, shown
        approve_in_form(page, dialog, APPROVER)

        wait_paused_at(run, "promote", not_key=asked.state_details.pause_key)
        dialog = open_resume_form(production, page, run)
        evidence.shot("resume-form-promote-second")
        shown = description_of(dialog)
        assert f"approved by {APPROVER} (1 of 2)" in shown, shown
        approve_in_form(page, dialog, GROUP_MEMBER)

        state = wait_final(run, 120)
        page.goto(ui(production, f"/runs/flow-run/{run}"))
        page.get_by_text("Completed").first.wait_for()
        evidence.shot("completed")
        assert state.is_completed(), f"{state.name}: {state.message}\n{production.diagnostics()}"
        plan = plan_from_dict(PLANS[PLAN_FILE])
        assert canary_weight(plan, production.slot.get("virtualservices", "reviews")) == 100


# --- what the form says --------------------------------------------------------------------


def schema_fields() -> list[tuple[str, dict[str, Any]]]:
    schema = deployment(RELEASE).parameter_openapi_schema
    fields = list(schema["properties"].items())
    for definition in schema.get("definitions", {}).values():
        fields += list(definition.get("properties", {}).items())
    return fields


def unreadable_labels() -> set[str]:
    """Labels a form shows for fields without a title of words: camelCase names run
    together ("Canaryaction"), and model names ("StableSpec") where a field has no title."""
    schema = deployment(RELEASE).parameter_openapi_schema
    camel = re.compile(r"[a-z][A-Z]")
    mashed = {name.title() for name, _ in schema_fields() if camel.search(name)}
    return mashed | {model for model in schema.get("definitions", {}) if camel.search(model)}


def form_text(production, page: Any, base: str) -> str:
    """The Custom run form's text with the plan written inline (every plan field shown)."""
    page.goto(f"{production.server.url}{base}/deployments/deployment/{deployment(RELEASE).id}/run")
    page.get_by_text("Parameters", exact=True).wait_for()
    # The plan's last choice is the plan written inline (tabs here, a button group there).
    if base:
        plan_field(page).get_by_role("tab").last.click()
    else:
        page.locator(".p-button-group").first.locator("button").last.click()
    page.get_by_text(re.compile(r"^Service")).first.wait_for()
    return settled_text(page)


def page_text(page: Any) -> str:
    return " ".join(page.locator("body").inner_text().split())


def settled_text(page: Any, timeout: float = 60) -> str:
    """The page's text once it stops changing: a form this big renders in parts."""
    last: list[str] = [""]

    def settled() -> str | None:
        now = page_text(page)
        done = now == last[0]
        last[0] = now
        return now if done else None

    return wait_until(settled, timeout, interval=1.0, message="the form to be rendered")


def not_shown(page: Any, texts: set[str], timeout: float = 30) -> list[str]:
    """Which of `texts` the page does not show, once it shows them all or `timeout` passed."""
    deadline = time.monotonic() + timeout
    while True:
        text = page_text(page)
        missing = sorted(t for t in texts if t not in text)
        if not missing or time.monotonic() > deadline:
            return missing
        time.sleep(0.5)


def test_the_custom_run_form_offers_the_plan_files(production, evidence):
    page = evidence.page
    with evidence.on_failure():
        open_custom_run_form(production, page)
        evidence.shot("plan-field")
        plan_file_choice(page).click()
        page.get_by_role("option").first.wait_for()
        offered = page.get_by_role("option").all_inner_texts()
        evidence.shot("plan-files")
        assert sorted(offered) == sorted(PLANS), offered


def test_the_custom_run_form_labels_read_and_descriptions_show_whole(production, evidence):
    page = evidence.page
    with evidence.on_failure():
        shown = form_text(production, page, "/v2")
        evidence.shot("inline-plan")
        legacy = form_text(production, page, "")
        evidence.shot("inline-plan-legacy-ui")

        problems = []
        for where, text in (("Prefect's UI", shown), ("the legacy UI", legacy)):
            seen = sorted(m for m in unreadable_labels() if re.search(rf"\b{m}\b", text))
            problems += [f"{where} labels fields {seen}"] if seen else []
        # Prefect's UI shows descriptions as plain text; the legacy UI renders them as
        # markdown and drops what reads as HTML ("Defaults to <service>-<version>.").
        plain = {
            description
            for _, prop in schema_fields()
            if (description := " ".join(prop.get("description", "").split()))
            and description in shown
            and not re.search(r"[*_`#\[]", description)
        }
        assert len(plain) > 20, f"the form shows only {len(plain)} field descriptions: {shown}"
        cut = not_shown(page, plain)
        problems += [f"the legacy UI shows these descriptions cut: {cut}"] if cut else []
        assert not problems, "\n".join(problems)
