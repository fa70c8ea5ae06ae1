"""`canary approve | reject | abort | status` against the real Prefect server."""

from __future__ import annotations

import subprocess
import sys

import pytest

from canary.cli import main
from canary.notify import ConsoleNotifier
from tests.approvals.gate_flows import GatedRun
from tests.support.waiting import wait_until

APPROVER = "U0APPROVER"
GATE = {"before": "promote", "approvers": {"users": [APPROVER]}, "timeout": "60s"}

pytestmark = pytest.mark.usefixtures("slack_env")


def canary(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_approve_as_an_approver_resumes_the_run(capsys):
    run = GatedRun(GATE)
    run.wait_paused("gate-promote")
    code, out, _ = canary(capsys, "approve", run.run_id, "--as", APPROVER, "--reason", "ok")
    assert code == 0 and "approved by U0APPROVER" in out
    assert run.finish().is_completed()
    assert run.outcome().message == "gate before promote approved by U0APPROVER: ok"


def test_a_refused_approver_is_one_line_exit_2_and_reject_ends_the_run(capsys):
    run = GatedRun(GATE)
    run.wait_paused("gate-promote")
    code, _, err = canary(capsys, "approve", run.run_id, "--as", "U0NOBODY")
    assert code == 2
    assert err == "canary: U0NOBODY is not an approver of gate before promote\n"
    assert run.server_state().is_paused()
    code, _, _ = canary(capsys, "reject", run.run_id, "--as", APPROVER, "--reason", "500s")
    assert code == 0
    state = run.finish()
    assert state.is_failed() and state.message.endswith("rejected by U0APPROVER: 500s")


def test_abort_stops_a_run_waiting_at_a_gate(capsys):
    run = GatedRun(GATE)
    run.wait_paused("gate-promote")
    code, out, _ = canary(capsys, "abort", run.run_id, "--as", "ops")
    assert code == 0 and "abort requested" in out
    state = run.finish()
    assert state.is_failed()
    assert state.message == "abort requested by ops at gate before promote"
    code, _, err = canary(capsys, "abort", run.run_id)
    assert code == 2 and "already ended" in err


def test_status_shows_state_phase_and_the_waiting_gate(capsys):
    run = GatedRun(GATE, ConsoleNotifier())
    run.wait_paused("gate-promote")

    def status() -> str | None:
        code, out, _ = canary(capsys, "status", run.run_id)
        assert code == 0
        return out if "phase    promote  canary weight 0%" in out else None

    out = wait_until(status, 15, interval=0.5, message="the phase in the status")
    assert "state    Paused" in out
    assert "gate     gate before promote: waiting, until" in out
    code, out, _ = canary(capsys, "status", "--flow", "gate-test")
    assert code == 0 and run.run_id in out.splitlines()[1] and "Paused" in out
    canary(capsys, "approve", run.run_id, "--as", APPROVER)
    assert run.finish().is_completed()


def test_unknown_runs_and_runs_not_at_a_gate_are_bad_input(capsys):
    code, _, err = canary(capsys, "approve", "00000000-0000-4000-8000-000000000000")
    assert code == 2 and err.startswith("canary: no flow run 00000000-")
    code, _, err = canary(capsys, "status", "00000000-0000-4000-8000-000000000000")
    assert code == 2 and len(err.splitlines()) == 1


def test_bad_arguments_are_one_line_exit_2_without_a_traceback():
    for args in (["approve", "not-a-run"], ["reject"], ["abort", "x"], ["approvals", "dance"]):
        result = subprocess.run(
            [sys.executable, "-m", "canary", *args], capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 2, (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert "Traceback" not in result.stderr


def test_serve_without_secrets_says_what_is_missing(monkeypatch):
    monkeypatch.delenv("SLACK_BOT_TOKEN")
    monkeypatch.delenv("SLACK_SIGNING_SECRET")
    result = subprocess.run(
        [sys.executable, "-m", "canary", "approvals", "serve", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "canary approvals serve: set SLACK_BOT_TOKEN and SLACK_SIGNING_SECRET"
    )
