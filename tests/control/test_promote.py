"""`canary promote [--full]` on a release running on the sandbox, real Prefect.

How fast a promote ends a 10-minute hold is bench/operator_promote.py's figure, not a
bound here.
"""

from __future__ import annotations

import threading

import pytest

from canary.control.commands import promote_main
from canary.control.requests import AlreadyDecided, request
from canary.events import EventKind
from sandbox.prometheus import free_port
from tests.control.test_pause_resume import step_plan
from tests.support.operators import OperatedRelease
from tests.test_release_metrics import decisions_counted, scrape, value

pytestmark = pytest.mark.usefixtures("prefect_api_url")
ALICE, BOB, MALLORY = "U0ALICE", "U0BOB", "U0MALLORY"
LONG_HOLD = 600.0  # ten minutes: a release that ends in a test was promoted


def test_promote_ends_a_long_hold_and_goes_on_to_the_next_phase(
    monkeypatch, start_sandbox, fast_plan
):
    port = free_port()
    monkeypatch.setenv("CANARY_METRICS_PORT", str(port))
    counted = decisions_counted("operator-promote")
    box = start_sandbox("healthy")
    release = OperatedRelease(step_plan(fast_plan, LONG_HOLD), box, "r-op-promote")
    release.holding("step-1")

    assert promote_main([release.run_id, "--as", ALICE, "--reason", "metrics look fine"]) == 0

    result = release.finish()
    assert result.outcome == "promoted", result
    promoted = release.of_kind(EventKind.OPERATOR_PROMOTED)
    assert len(promoted) == 1 and promoted[0].decision == "operator-promote"
    assert f"ended by {ALICE}: metrics look fine; on to promote" in promoted[0].message
    assert [p.name for p in result.phases][-3:] == ["step-1", "promote", "cleanup"]
    found = scrape(port)
    assert value(found, "canary_release_decisions_total", decision="operator-promote") == (
        counted + 1
    )


def test_promote_full_needs_an_allowed_approver_and_four_eyes(start_sandbox, fast_plan, capsys):
    box = start_sandbox("healthy")
    gates = [
        {
            "before": "promote",
            "approvers": {"users": [ALICE, BOB]},
            "timeout": "60s",
            "promoteApproves": True,
        }
    ]
    plan = step_plan(fast_plan, LONG_HOLD, weights=(20, 50), gates=gates)
    release = OperatedRelease(plan, box, "r-op-promote-full")
    before = release.holding("step-1")

    assert promote_main([release.run_id, "--full", "--as", MALLORY]) == 2
    assert f"{MALLORY} is not an approver" in capsys.readouterr().err
    assert release.record().slot == before.slot  # nothing claimed, nothing changed
    assert release.of_kind(EventKind.OPERATOR_REQUEST) == []

    assert promote_main([release.run_id, "--full", "--as", ALICE]) == 0
    assert "(1 of 2)" in capsys.readouterr().out
    assert release.record().holding == "step-1"  # still held: one approver is not enough
    assert promote_main([release.run_id, "--full", "--as", ALICE]) == 2
    assert "four-eyes needs a second, different approver" in capsys.readouterr().err

    assert promote_main([release.run_id, "--full", "--as", BOB]) == 0

    result = release.finish()
    assert result.outcome == "promoted", result
    assert "step-2" not in [p.name for p in result.phases]
    promoted = release.of_kind(EventKind.OPERATOR_PROMOTED)
    assert [e.decision for e in promoted] == ["operator-promote-full"]
    assert (
        f"by {ALICE} and {BOB}" in promoted[0].message and "skipping step-2" in promoted[0].message
    )
    # The promote gate counts as approved by their promote (promoteApproves): nobody asked.
    assert release.of_kind(EventKind.APPROVAL_REQUESTED) == []
    given = release.of_kind(EventKind.APPROVAL_GIVEN)
    assert len(given) == 1 and "their promote" in given[0].message


def test_two_operators_at_once_one_decides_the_other_is_told(start_sandbox, fast_plan):
    box = start_sandbox("healthy")
    release = OperatedRelease(step_plan(fast_plan, LONG_HOLD), box, "r-op-race")
    release.holding("step-1")
    start = threading.Barrier(2)
    answers: dict[str, object] = {}

    def act(who: str, action: str) -> None:
        start.wait()
        try:
            answers[who] = request(release.run_id, action, who, wait=0)
        except AlreadyDecided as exc:
            answers[who] = exc

    threads = [
        threading.Thread(target=act, args=(ALICE, "pause")),
        threading.Thread(target=act, args=(BOB, "promote")),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    refused = [a for a in answers.values() if isinstance(a, AlreadyDecided)]
    decided = [a for a in answers.values() if not isinstance(a, AlreadyDecided)]
    assert len(refused) == 1 and len(decided) == 1, answers
    winner = decided[0].claim
    assert "already decided" in str(refused[0]) and winner.by in str(refused[0])
    if winner.action == "pause":
        release.seen(EventKind.OPERATOR_PAUSED)
        request(release.run_id, "promote", ALICE)  # ends the pause and the hold
    result = release.finish()
    assert result.outcome == "promoted"
    acted = [e.kind for e in release.events if e.kind.value.startswith("operator-")]
    expected = {"pause": [EventKind.OPERATOR_PAUSED, EventKind.OPERATOR_PROMOTED]}
    assert acted == expected.get(winner.action, [EventKind.OPERATOR_PROMOTED])
