"""`canary run` as a user runs it: a subprocess with a kubeconfig, against the sandbox."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from canary.exit_codes import BAD_INPUT, PROMOTED, ROLLED_BACK
from canary.plan import plan_from_dict
from canary.planner import canary_weight


def canary(*args: str, api_url: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"PREFECT_API_URL": api_url}
    return subprocess.run(
        [sys.executable, "-m", "canary", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


def plan_file(tmp_path: Path, data: dict[str, Any]) -> str:
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def run_release(box: Any, plan: str, api_url: str) -> subprocess.CompletedProcess[str]:
    return canary(
        "run",
        plan,
        "--kubeconfig",
        box.kubeconfig,
        "--mesh-url",
        box.sandbox.ingress_url,
        api_url=api_url,
    )


def test_a_healthy_release_exits_0(start_sandbox, plan_data, prefect_api_url, tmp_path):
    box, data = start_sandbox("healthy"), plan_data()

    done = run_release(box, plan_file(tmp_path, data), prefect_api_url)

    assert done.returncode == PROMOTED, done.stderr
    assert "isolate  phase-started" in done.stdout
    assert "step-1  weight-changed  v2 at 20%" in done.stdout
    assert "outcome   promoted" in done.stdout
    assert done.stderr == ""
    vs = box.get("virtualservices", "reviews")
    assert canary_weight(plan_from_dict(data), vs) == 100


def test_a_faulty_release_exits_3_with_the_reason(
    start_sandbox, plan_data, prefect_api_url, tmp_path
):
    box, data = start_sandbox("faulty"), plan_data()

    done = run_release(box, plan_file(tmp_path, data), prefect_api_url)

    assert done.returncode == ROLLED_BACK, done.stderr
    assert "outcome   rolled-back" in done.stdout
    assert "reason    test: checks failed: reviews-answer: FAILED" in done.stdout
    assert "Traceback" not in done.stdout + done.stderr
    assert canary_weight(plan_from_dict(data), box.get("virtualservices", "reviews")) == 0
    assert box.get("deployments", "reviews-v2") is None


def test_a_bad_plan_exits_2_with_its_problems(plan_data, prefect_api_url, tmp_path):
    data = plan_data(analysis={"interval": "soon"})

    done = canary("run", plan_file(tmp_path, data), api_url=prefect_api_url)

    assert done.returncode == BAD_INPUT
    assert "plan.yaml:" in done.stderr and "analysis.interval" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("content", [None, "clusters: []\ncontexts: oops\n"])
def test_a_bad_kubeconfig_exits_2_naming_the_file(plan_data, prefect_api_url, tmp_path, content):
    kubeconfig = tmp_path / "kubeconfig"
    if content is not None:
        kubeconfig.write_text(content)

    done = canary(
        "run",
        plan_file(tmp_path, plan_data()),
        "--kubeconfig",
        str(kubeconfig),
        api_url=prefect_api_url,
    )

    assert done.returncode == BAD_INPUT
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and str(kubeconfig) in lines[0], done.stderr
    assert done.stdout == ""
