"""A release whose worker dies mid-phase resumes where it stopped when run again."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from canary.lease import LEASE, LEASE_HOLDER, OUTCOME, annotations_of
from canary.plan import plan_from_dict
from canary.planner import PHASE_ANNOTATION, RELEASE_ANNOTATION
from tests.reliability.helpers import WeightSampler, write_plan
from tests.support.waiting import wait_until

STEP_HOLD = "6s"  # long enough to kill the worker in the middle of step-1
LEASE_TTL = "3"  # the second run waits this long for the dead worker's lease


def canary_run(plan: Path, box: Any) -> list[str]:
    return [
        sys.executable, "-m", "canary", "run", str(plan),
        "--kubeconfig", box.kubeconfig, "--mesh-url", box.sandbox.ingress_url,
    ]  # fmt: skip


@pytest.fixture
def run_env(prefect_api_url: str, tmp_path: Path) -> dict[str, str]:
    home = tmp_path / "prefect-home"
    home.mkdir()
    return os.environ | {
        "PREFECT_API_URL": prefect_api_url,
        "PREFECT_HOME": str(home),
        "CANARY_LEASE_TTL": LEASE_TTL,
    }


def deployment_creations(box: Any) -> list[str]:
    return [
        r.path for r in box.api.requests if r.method == "POST" and r.path.endswith("/deployments")
    ]


def test_a_killed_release_resumes_at_its_step(start_sandbox, plan_data, run_env, tmp_path):
    box = start_sandbox("healthy")
    steps = [{"weight": 20, "hold": STEP_HOLD}, {"weight": 50, "hold": "1s"}]
    data = plan_data(steps=steps, analysis={"interval": 1, "threshold": 1})
    plan, path = plan_from_dict(data), write_plan(tmp_path / "plan.yaml", data)
    first = subprocess.Popen(
        canary_run(path, box), env=run_env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:

        def at_step_1() -> dict[str, str] | None:
            notes = annotations_of(box.get("virtualservices", "reviews"))
            return notes if notes.get(PHASE_ANNOTATION) == "step-1" else None

        notes = wait_until(at_step_1, 90, interval=0.01, message="the first run to reach step-1")
    finally:
        first.kill()  # as a node dying under the worker: no rollback, no lease given back
        first.wait(10)
    release_id = notes[RELEASE_ANNOTATION]
    assert notes[LEASE_HOLDER] == release_id  # the dead run held the service
    canary_uid = box.get("deployments", "reviews-v2")["metadata"]["uid"]
    creations = deployment_creations(box)

    with WeightSampler(box, plan) as sampler:
        second = subprocess.run(
            canary_run(path, box), env=run_env, capture_output=True, text=True,
            timeout=600,
        )  # fmt: skip

    output = second.stdout + second.stderr
    assert second.returncode == 0, output
    assert f"release   {release_id}" in output  # the same release, adopted from the cluster
    assert "outcome   promoted" in output
    ran = [line.split()[0] for line in output.splitlines() if line.startswith("  ")]
    assert ran == ["step-1", "step-2", "promote", "cleanup"], output
    assert box.get("deployments", "reviews-v2")["metadata"]["uid"] == canary_uid
    assert deployment_creations(box) == creations, "a second canary was created"
    assert sampler.weights[0] == 20, sampler.weights
    assert sampler.weights == sorted(sampler.weights), f"weight went down: {sampler.weights}"
    assert sampler.weights[-1] == 100
    notes = annotations_of(box.get("virtualservices", "reviews"))
    assert LEASE not in notes and LEASE_HOLDER not in notes  # given back at the end
    assert notes[OUTCOME] == "promoted"
