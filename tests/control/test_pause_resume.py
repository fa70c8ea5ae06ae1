"""`canary pause` and `canary resume` on a release running on the sandbox, real Prefect.

A pause holds the weight (sampled past the hold's end), the run shows Paused with a
Resume form, the analysis goes on (a fault still rolls back), and a resume (the CLI, or
the Prefect UI's form) lets the hold count down again.
"""

from __future__ import annotations

import time

import pytest

from canary.cli import main
from canary.control.commands import pause_main, resume_main
from canary.control.requests import ControlError, request
from canary.events import EventKind
from canary.report.recorder import build_report
from canary.report.render import markdown
from flows.canary_release import ReleaseRolledBack
from tests.support.approvals import form_description, resume_as_form
from tests.support.operators import OperatedRelease, scale_canary_to_zero
from tests.support.waiting import wait_until

pytestmark = pytest.mark.usefixtures("prefect_api_url")
OPERATOR = "U0OPERATOR"
STEP_HOLD = 3.0


def test_a_pause_holds_the_weight_past_the_holds_end_until_resumed(
    start_sandbox, fast_plan, capsys
):
    box = start_sandbox("healthy")
    release = OperatedRelease(step_plan(fast_plan, STEP_HOLD), box, "r-op-pause")
    release.holding("step-1")

    assert pause_main([release.run_id, "--as", OPERATOR, "--reason", "looking at p99"]) == 0
    said = capsys.readouterr().out
    assert f"paused by {OPERATOR} at step-1 (20 %)" in said, said
    state = release.state()
    assert state.is_paused() and state.state_details.pause_key.startswith("operator-pause-")
    form = form_description(state) or ""
    assert f"Paused by {OPERATOR}" in form and "canary resume" in form, form
    assert main(["status", release.run_id]) == 0
    assert f"paused   by {OPERATOR} at step-1 (20 %) since" in capsys.readouterr().out

    # Sampled well past the hold's own end: the weight stays, the phase does not finish.
    paused_at = time.monotonic()
    samples = []
    while time.monotonic() < paused_at + STEP_HOLD + 3:
        samples.append(release.weight())
        time.sleep(0.25)
    assert samples and set(samples) == {20}, samples
    assert not [e for e in release.of_kind(EventKind.PHASE_FINISHED) if e.phase == "step-1"]
    assert release.state().is_paused()
    rounds = [e for e in release.of_kind(EventKind.ANALYSIS) if e.phase == "step-1"]
    assert release.record().paused is not None and not rounds  # no verdict while held

    assert resume_main([release.run_id, "--as", OPERATOR]) == 0
    assert "resume of run" in capsys.readouterr().out

    result = release.finish()
    assert result.outcome == "promoted", result
    kinds = release.kinds()
    assert kinds.index("operator-paused") < kinds.index("operator-resumed")
    assert kinds.index("operator-resumed") < _finished(release, "step-1")
    decisions = [e.decision for e in release.events if e.kind.value.startswith("operator-")]
    assert decisions == ["operator-pause", "operator-resume"]
    report = markdown(build_report(result.identity, release.events, result))
    assert "## Operator actions" in report and f"paused by {OPERATOR}" in report

    with pytest.raises(ControlError, match="has already ended"):
        request(release.run_id, "pause", OPERATOR)


def test_the_prefect_ui_resumes_a_pause_with_its_form_judged_like_a_gate(start_sandbox, fast_plan):
    box = start_sandbox("healthy")
    gates = [{"before": "promote", "approvers": {"users": [OPERATOR]}, "timeout": "60s"}]
    release = OperatedRelease(step_plan(fast_plan, 600, gates=gates), box, "r-op-pause-ui")
    release.holding("step-1")
    request(release.run_id, "pause", OPERATOR)
    first_key = release.state().state_details.pause_key

    # Someone who is no approver sends the form: refused, and paused again under a new key.
    resume_as_form(release.run_id, {"approver": "U0STRANGER", "reason": "go"})
    refused = wait_until(
        lambda: next(
            (e for e in release.of_kind(EventKind.OPERATOR_REQUEST) if "refused" in e.message),
            None,
        ),
        30,
        message="the refused resume",
    )
    assert "U0STRANGER is not an approver" in refused.message

    def paused_again() -> bool:
        state = release.state()
        return state.is_paused() and state.state_details.pause_key != first_key

    wait_until(paused_again, 30, message="the run paused again")
    assert release.record().paused is not None

    resume_as_form(release.run_id, {"approver": OPERATOR, "reason": "fixed"})
    resumed = release.seen(EventKind.OPERATOR_RESUMED, 30)
    assert f"resumed by {OPERATOR}" in resumed.message and "fixed" in resumed.message
    wait_until(lambda: release.state().is_running(), 30, message="the run Running again")
    request(release.run_id, "promote", OPERATOR)  # the hold is 10 minutes: end it

    # The plan's gate before promote still asks (this plan does not let a promote count).
    wait_until(lambda: release.of_kind(EventKind.APPROVAL_REQUESTED), 30, message="the gate")
    from canary.approvals.decisions import auto_approve

    auto_approve(release.run_id, "promote", who=OPERATOR)
    assert release.finish().outcome == "promoted"


def test_a_fault_during_a_pause_still_rolls_back(start_sandbox, fast_plan):
    box = start_sandbox("healthy")
    plan = step_plan(fast_plan, 600)
    release = OperatedRelease(plan, box, "r-op-pause-fault")
    release.holding("step-1")
    request(release.run_id, "pause", OPERATOR)
    wait_until(lambda: release.state().is_paused(), 30, message="the run Paused")

    scale_canary_to_zero(box, plan)

    outcome = release.finish()
    assert isinstance(outcome, ReleaseRolledBack), outcome
    assert "canary-ready" in outcome.result.reason, outcome.result.reason
    kinds = release.kinds()
    assert "operator-resumed" not in kinds
    assert kinds.index("operator-paused") < kinds.index("rollback")
    assert release.weight() == 0
    state = release.state()
    assert state.is_failed(), state  # the release's own end, not a pause left behind
    record = release.record()
    assert record.outcome == "rolled-back" and record.paused is None
    with pytest.raises(ControlError, match="has already ended"):
        request(release.run_id, "resume", OPERATOR)


def step_plan(fast_plan, hold: float, weights: tuple[int, ...] = (20,), **overrides):
    """The fast plan with steps of `weights` holding `hold` seconds each."""
    steps = [{"weight": weight, "hold": hold} for weight in weights]
    return fast_plan(analysis={"interval": 1, "threshold": 1}, steps=steps, **overrides)


def _finished(release: OperatedRelease, phase: str) -> int:
    return next(
        i
        for i, e in enumerate(release.events)
        if e.kind is EventKind.PHASE_FINISHED and e.phase == phase
    )
