"""`canary retry`: a rolled-back release runs again as a new run that names the earlier one;
and what the operators' commands answer to bad runs."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from canary.cli import main
from canary.control.requests import request
from canary.control.state import SlotClaim, claim_slot, slot_claim
from canary.events import EventKind
from canary.exit_codes import BAD_INPUT
from tests.control.test_pause_resume import step_plan
from tests.support.operators import OperatedRelease, scale_canary_to_zero
from tests.support.releases import start_in_thread
from tests.support.waiting import wait_until

pytestmark = pytest.mark.usefixtures("prefect_api_url")
ALICE = "U0ALICE"


def test_retry_of_a_rolled_back_release_runs_it_again_and_it_is_promoted(
    start_sandbox, fast_plan, tmp_path: Path, capsys
):
    box = start_sandbox("healthy")
    plan = step_plan(fast_plan, 600)
    first = OperatedRelease(plan, box, "r-op-retry")
    first.holding("step-1")
    request(first.run_id, "pause", ALICE)  # held there while the canary fails
    scale_canary_to_zero(box, plan)
    assert first.finish().result.outcome == "rolled-back"
    earlier = first.run_id

    report = tmp_path / "retry.md"
    codes: list[int] = []
    retry = start_in_thread(
        lambda: codes.append(main(["retry", earlier, "--as", ALICE, "--report", str(report)]))
    )
    retried = wait_until(lambda: _retry_of(earlier), 60, 0.2, "the retry's flow run")
    assert retried != earlier
    wait_until(
        lambda: (r := _record(retried)) is not None and r.holding == "step-1",
        60,
        0.1,
        "the retry holding step-1",
    )
    assert _record(retried).retry_of == earlier
    request(retried, "promote", ALICE)  # the scenario is healthy now: on to promote

    retry.join(120)
    assert codes == [0], capsys.readouterr()
    text = report.read_text()
    assert f"A retry of rolled-back run `{earlier}`" in text
    assert f"retry of rolled-back run {earlier}, asked by {ALICE}" in text
    assert "**Outcome: promoted**" in text
    assert box.get("deployments", "reviews-v1") is None  # cleaned up: v2 alone serves

    assert main(["retry", earlier, "--as", ALICE]) == BAD_INPUT
    assert f"already retried by {ALICE}" in capsys.readouterr().err
    assert main(["retry", retried, "--as", ALICE]) == BAD_INPUT
    assert "was promoted: only a rolled-back release is retried" in capsys.readouterr().err


@pytest.mark.parametrize("verb", ["pause", "resume", "promote", "retry"])
def test_a_bad_or_unknown_run_is_one_line_and_exit_2(verb, capsys):
    with pytest.raises(SystemExit) as exited:  # argparse's way out, after its one line
        main([verb, "not-a-run", "--as", ALICE])
    assert exited.value.code == BAD_INPUT
    err = capsys.readouterr().err.strip()
    assert err == f"canary {verb}: error: argument RUN_ID: 'not-a-run' is not a flow run id"

    unknown = str(uuid.uuid4())
    assert main([verb, unknown, "--as", ALICE]) == BAD_INPUT
    err = capsys.readouterr().err.strip()
    assert err == f"canary: no flow run {unknown}", err


def test_a_run_that_ended_is_refused_and_a_late_promote_is_told_the_hold_ended(
    start_sandbox, fast_plan, capsys
):
    box = start_sandbox("healthy")
    release = OperatedRelease(step_plan(fast_plan, 1), box, "r-op-ended")
    assert release.finish().outcome == "promoted"
    for verb in ("pause", "resume", "promote"):
        assert main([verb, release.run_id, "--as", ALICE]) == BAD_INPUT
        err = capsys.readouterr().err.strip().splitlines()
        assert err == [f"canary: run {release.run_id} has already ended (Completed)"], err

    # A promote that read the record while step-1 held, and claims that slot as the hold
    # ends on its own: the hold claimed it first, so the promote is told, not carried out.
    slots = [(n, slot_claim(release.run_id, n)) for n in range(1, release.record().slot)]
    step_slot = next(n for n, claim in slots if claim and claim.phase == "step-1")
    late = SlotClaim(action="promote", by=ALICE, phase="step-1")
    first = claim_slot(release.run_id, step_slot, late)
    assert first is not None and first.action == "hold-ended"
    assert first.decided().startswith("already decided: the hold of step-1 ended at")
    assert release.of_kind(EventKind.OPERATOR_PROMOTED) == []


def _retry_of(run_id: str) -> str | None:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(limit=200)
    found = next((r for r in runs if r.parameters.get("retry_of") == run_id), None)
    return str(found.id) if found is not None else None


def _record(run_id: str):
    from canary.control.state import load_record

    return load_record(run_id)
