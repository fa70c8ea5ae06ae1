"""Rollback always lands: on abort, on cancellation from Prefect, and when a worker is stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.states import Cancelling

from canary.lease import LEASE, OUTCOME, annotations_of
from canary.plan import plan_from_dict
from canary.stopping import request_abort
from tests.reliability.helpers import BackgroundRelease, assert_all_on_stable, write_plan
from tests.support.waiting import wait_until

pytestmark = pytest.mark.usefixtures("prefect_api_url")

REPO = Path(__file__).resolve().parents[2]
LONG_STEP = {"steps": [{"weight": 20, "hold": "30s"}], "analysis": {"interval": 1}}


def test_an_abort_during_a_hold_rolls_back_within_a_round(start_sandbox, fast_plan):
    box, plan = start_sandbox("healthy"), fast_plan(**LONG_STEP)
    release = BackgroundRelease(plan, box)
    run_id = release.wait_for_phase("step-1")

    request_abort(run_id, "U0ALICE")
    state = release.finish()

    # Noticed in the hold of step-1 (30 s), not at the next phase.
    assert state.is_failed()
    result = state.result(raise_on_failure=False).result
    assert result.outcome == "rolled-back" and result.failed_phase == "step-1"
    assert result.reason.startswith("step-1: aborted"), result.reason
    assert_all_on_stable(box, plan)


def test_a_run_cancelled_from_prefect_rolls_back_and_ends_cancelled(start_sandbox, fast_plan):
    box, plan = start_sandbox("healthy"), fast_plan(**LONG_STEP)
    release = BackgroundRelease(plan, box)
    run_id = release.wait_for_phase("step-1")

    with get_client(sync_client=True) as client:
        client.set_flow_run_state(run_id, Cancelling(message="stopped from the UI"))
    state = release.finish()

    assert state.is_cancelled(), state
    assert_all_on_stable(box, plan)
    notes = annotations_of(box.get("virtualservices", "reviews"))
    assert LEASE not in notes and notes[OUTCOME] == "rolled-back"
    with get_client(sync_client=True) as client:
        assert client.read_flow_run(run_id).state.is_cancelled()


def test_a_terminated_worker_rolls_back_in_its_crash_hook(
    start_sandbox, plan_data, prefect_api_url, tmp_path: Path
):
    box = start_sandbox("healthy")
    plan, worker = run_in_a_process(box, plan_data, prefect_api_url, tmp_path)
    output = stop_at_step_1(box, worker, lambda: worker.send_signal(signal.SIGTERM))

    assert "rolling back: run crashed" in output, output
    assert_all_on_stable(box, plan)
    assert annotations_of(box.get("virtualservices", "reviews"))[OUTCOME] == "rolled-back"


def test_a_sigterm_lost_on_the_way_still_rolls_back_in_the_crash_hook(
    start_sandbox, plan_data, prefect_api_url, tmp_path: Path
):
    """As when the code running at that moment swallows Prefect's TerminationSignal."""
    box, flag = start_sandbox("healthy"), tmp_path / "lose-it"
    losing = [sys.executable, "-m", "tests.support.lost_sigterm", str(flag), "--"]
    plan, worker = run_in_a_process(box, plan_data, prefect_api_url, tmp_path, losing)
    output = stop_at_step_1(box, worker, flag.touch)

    assert "a SIGTERM was lost" in output, output
    assert "rolling back: run crashed" in output, output
    assert_all_on_stable(box, plan)
    assert annotations_of(box.get("virtualservices", "reviews"))[OUTCOME] == "rolled-back"


def run_in_a_process(
    box: Any, plan_data: Any, api_url: str, tmp_path: Path, cli: list[str] | None = None
) -> tuple[Any, subprocess.Popen]:
    """`canary run` of a plan whose step-1 holds 30 s, in a process of its own."""
    data = plan_data(**LONG_STEP)
    plan, path = plan_from_dict(data), write_plan(tmp_path / "plan.yaml", data)
    env = os.environ | {"PREFECT_API_URL": api_url, "PREFECT_HOME": str(tmp_path)}
    command = [
        *(cli or [sys.executable, "-m", "canary"]), "run", str(path),
        "--kubeconfig", box.kubeconfig, "--mesh-url", box.sandbox.ingress_url,
    ]  # fmt: skip
    worker = subprocess.Popen(
        command, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    return plan, worker


def stop_at_step_1(box: Any, worker: subprocess.Popen, stop: Any) -> str:
    """Call `stop` once the release is at step-1; the run's output once it ended."""
    try:
        wait_until(lambda: at_step_1(box), 90, interval=0.02, message="the run to reach step-1")
        stop()  # as Kubernetes stopping the worker's pod
        output, _ = worker.communicate(timeout=120)  # a run the stop missed promotes at 30 s
    finally:
        worker.kill()
    return output.decode()


def at_step_1(box: Any) -> bool:
    vs = box.get("virtualservices", "reviews")
    return annotations_of(vs).get("canary.release/phase") == "step-1"


GATED = {"gates": [{"before": "step-1", "approvers": {"users": ["U0JASON"]}, "timeout": "1h"}]}


def paused_at_gate(start_sandbox: Any, fast_plan: Any) -> tuple[Any, Any, BackgroundRelease, str]:
    """A release paused at its gate before step-1 (an hour's timeout): box, plan, release, run."""
    box, plan = start_sandbox("healthy"), fast_plan(**GATED)
    release = BackgroundRelease(plan, box)
    run_id = release.wait_for_phase("header-route")

    def paused() -> bool:
        with get_client(sync_client=True) as client:
            return client.read_flow_run(run_id).state.is_paused()

    wait_until(paused, 30, message="the pause at the gate")
    return box, plan, release, run_id


def test_a_run_cancelled_while_paused_at_a_gate_rolls_back_at_once(start_sandbox, fast_plan):
    box, plan, release, run_id = paused_at_gate(start_sandbox, fast_plan)

    with get_client(sync_client=True) as client:
        client.set_flow_run_state(run_id, Cancelling(message="stopped from the UI"))
    # The gate waits up to an hour: only noticing the cancellation ends it within a minute.
    state = release.finish(timeout=60)

    assert state.is_cancelled(), state
    assert "cancelled from Prefect" in state.message, state.message
    assert_all_on_stable(box, plan)
    assert annotations_of(box.get("virtualservices", "reviews"))[OUTCOME] == "rolled-back"


def test_an_abort_at_a_gate_rolls_back_without_anyone_resuming_it(start_sandbox, fast_plan):
    box, plan, release, run_id = paused_at_gate(start_sandbox, fast_plan)

    request_abort(run_id, "U0ALICE")  # only the Variable: the gate's own wait must see it
    state = release.finish(timeout=60)  # the gate would wait an hour

    assert state.is_failed(), state
    result = state.result(raise_on_failure=False).result
    assert result.outcome == "rolled-back"
    assert "abort requested by U0ALICE" in result.reason, result.reason
    assert_all_on_stable(box, plan)
