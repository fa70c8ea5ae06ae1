"""`canary demo` without test checks: metric analysis alone catches a bad canary.

Each demo runs as a user runs it, with its own ephemeral Prefect server and Prefect home,
all at once to keep the test short.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from canary.exit_codes import ROLLED_BACK
from sandbox.demo import DEMO_PLAN
from tests.support.prometheus import require_prometheus

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def plan_without_checks(tmp_path: Path) -> Path:
    """The demo plan minus its test checks, so the test phase cannot catch anything."""
    data = yaml.safe_load(DEMO_PLAN.read_text())
    data["tests"].pop("checks")
    path = tmp_path / "no-checks.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def start_demo(scenario: str, plan: Path, home: Path) -> subprocess.Popen[str]:
    # The demo starts its own Prefect server, on a database it keeps in the user's cache.
    env = os.environ | {"XDG_CACHE_HOME": str(home), "PYTHONPATH": str(REPO)}
    env.pop("PREFECT_API_URL", None)
    return subprocess.Popen(
        [sys.executable, "-m", "canary", "demo", "--scenario", scenario, "--plan", str(plan)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPO,
    )


def reason_line(output: str) -> str:
    return next((line for line in output.splitlines() if line.startswith("reason    ")), "")


def test_faulty_and_slow_canaries_are_rolled_back_by_the_metric_they_break(
    plan_without_checks, tmp_path
):
    require_prometheus()  # without one the demo drops metric analysis
    expected = {"faulty": "request-success-rate", "slow": "request-duration"}
    demos = {s: start_demo(s, plan_without_checks, tmp_path / "cache") for s in expected}
    outputs = {s: p.communicate(timeout=600) for s, p in demos.items()}

    for scenario, metric in expected.items():
        stdout, stderr = outputs[scenario]
        assert demos[scenario].returncode == ROLLED_BACK, stdout + stderr
        reason = reason_line(stdout)
        assert metric in reason and "failed checks" in reason, reason
        assert "reason    test:" not in stdout  # the test phase has nothing to check
        assert "outcome   rolled-back" in stdout
        assert "routing   v1 100%   v2 0%" in stdout
        assert "Traceback" not in stderr
