"""Every release transition is a Prefect event, and an Automation can act on a rollback."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.events.worker import EventsWorker

from canary.notify.prefect_events import EVENT_PREFIX
from flows.canary_release import ReleaseRolledBack
from tests.support.releases import release_outcome
from tests.support.waiting import wait_until

pytestmark = pytest.mark.usefixtures("prefect_api_url")


def events(prefix: str, resource: str) -> list[dict[str, Any]]:
    """The events about `resource` whose name starts with `prefix`, oldest first."""
    query = {"event": {"prefix": [prefix]}, "resource": {"id": [resource]}, "order": "ASC"}
    with get_client(sync_client=True) as client:
        page = client.request("POST", "/events/filter", json={"filter": query, "limit": 50})
    return page.json()["events"]


def create_automation(name: str) -> str:
    automation = {
        "name": name,
        "trigger": {
            "type": "event",
            "match": {"prefect.resource.id": "canary.release.*", "canary.service": "reviews"},
            "expect": [f"{EVENT_PREFIX}rollback"],
            "posture": "Reactive",
            "threshold": 1,
            "within": 0,
        },
        "actions": [{"type": "do-nothing"}],
    }
    with get_client(sync_client=True) as client:
        return client.request("POST", "/automations/", json=automation).json()["id"]


def landed(event: dict[str, Any]) -> bool:
    return event["event"].endswith(".rollback") and "canary_weight" in event["payload"]


def test_a_rolled_back_release_emits_its_transitions_and_triggers_an_automation(
    start_sandbox, fast_plan
):
    automation = create_automation(f"page on rollback {uuid.uuid4().hex[:6]}")
    box = start_sandbox("faulty")
    release_id = f"r-events-{uuid.uuid4().hex[:6]}"

    outcome = release_outcome(fast_plan(), box, release_id)
    EventsWorker.drain_all()

    assert isinstance(outcome, ReleaseRolledBack), outcome
    resource = f"canary.release.default.reviews.{release_id}"

    def emitted() -> list[dict[str, Any]] | None:
        mine = events(EVENT_PREFIX, resource)
        return mine if any(landed(e) for e in mine) else None

    mine = wait_until(emitted, 60, interval=0.5, message="the release's events")
    kinds = [e["event"].removeprefix(EVENT_PREFIX) for e in mine]
    assert kinds[:2] == ["phase-started", "phase-finished"], kinds  # isolate
    assert "rollback" in kinds and "promoted" not in kinds
    checks = next(e for e in mine if e["event"].endswith(".analysis"))
    assert (checks["payload"]["phase"], checks["payload"]["decision"]) == ("test", "fail")
    first = mine[0]["resource"]
    assert (first["canary.service"], first["canary.stable-version"]) == ("reviews", "v1")
    assert (first["canary.canary-version"], first["canary.release-id"]) == ("v2", release_id)
    related = {r["prefect.resource.role"] for e in mine for r in e["related"]}
    assert "flow-run" in related
    # Two rollback events: "rolling back" as it starts, and "done" with the weight it left.
    # Both may carry the same time, so they are told apart by what they say.
    done = next(e for e in mine if landed(e))
    assert done["payload"]["canary_weight"] == 0
    assert done["payload"]["message"].startswith("done: all traffic on v1")

    fired = wait_until(
        lambda: events("prefect.automation.triggered", f"prefect.automation.{automation}"),
        60,
        interval=0.5,
        message="the Automation to be triggered",
    )
    triggering = {r["prefect.resource.id"] for e in fired for r in e["related"]}
    assert any(resource in str(e) for e in fired), (fired, triggering)
