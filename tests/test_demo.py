"""`canary demo` as a user runs it, one subprocess per scenario, all at once."""

from __future__ import annotations

import os
import subprocess
import sys

from canary.exit_codes import BAD_INPUT, PROMOTED, ROLLED_BACK
from sandbox.demo import CONFIGS
from tests.support.prometheus import require_prometheus

GATEWAY_API_PLAN = ("--plan", str(CONFIGS / "bookinfo-reviews-gateway-api.yaml"))


def start_demo(scenario: str, api_url: str, *flags: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "canary", "demo", "--scenario", scenario, *flags],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ | {"PREFECT_API_URL": api_url},
    )


def test_healthy_is_promoted_faulty_and_unready_are_rolled_back(prefect_api_url):
    demos = {s: start_demo(s, prefect_api_url) for s in ("healthy", "faulty", "unready")}
    outputs = {s: p.communicate(timeout=600) for s, p in demos.items()}
    codes = {s: p.returncode for s, p in demos.items()}

    assert codes == {"healthy": PROMOTED, "faulty": ROLLED_BACK, "unready": ROLLED_BACK}, outputs
    healthy, faulty, unready = (outputs[s][0] for s in ("healthy", "faulty", "unready"))

    assert "step-1  weight-changed  v2 at 20%" in healthy
    # Both of the plan's gates, answered by the demo as a person would.
    assert "gate before step-1: approved by demo" in healthy
    assert "gate before promote: approved by demo" in healthy
    assert "traffic  v1" in healthy
    assert "outcome   promoted" in healthy
    assert "routing   v1 0%   v2 100%" in healthy
    assert "running   reviews-v2\n" in healthy

    assert "reason    test: checks failed" in faulty
    assert "reason    deploy: Deployment reviews-v2 not ready before the deadline" in unready
    for rolled_back in (faulty, unready):
        assert "outcome   rolled-back" in rolled_back
        assert "routing   v1 100%   v2 0%" in rolled_back
        assert "running   reviews-v1\n" in rolled_back
    for _, stderr in outputs.values():
        assert "Traceback" not in stderr


def test_the_gateway_api_walk_through_is_promoted_and_bad_canaries_rolled_back(
    prefect_api_url,
):
    require_prometheus()  # the slow canary is caught by its latency, read from Prometheus
    scenarios = ("healthy", "faulty", "slow")
    demos = {s: start_demo(s, prefect_api_url, *GATEWAY_API_PLAN) for s in scenarios}
    outputs = {s: p.communicate(timeout=600) for s, p in demos.items()}
    codes = {s: p.returncode for s, p in demos.items()}

    assert codes == {"healthy": PROMOTED, "faulty": ROLLED_BACK, "slow": ROLLED_BACK}, outputs
    healthy, faulty, slow = (outputs[s][0] for s in scenarios)

    # The plan's steps (10 %, then 50 %), the header route, and the users' traffic moving.
    assert "step-1  weight-changed  v2 at 10%" in healthy
    assert "step-2  weight-changed  v2 at 50%" in healthy
    assert "header-route  phase-finished" in healthy
    assert "traffic  v1" in healthy
    assert "outcome   promoted" in healthy
    assert "routing   v1 0%   v2 100%   (HTTPRoute default/reviews read back)" in healthy
    assert "traffic   v1   0%   v2 100%" in healthy
    assert "running   reviews-v2\n" in healthy

    assert "reason    test: checks failed" in faulty
    # Istio's metrics of the canary's workload, routed to by its own Service, say it is slow.
    reason = next(line for line in slow.splitlines() if line.startswith("reason    "))
    # Failed checks, or (on a busy machine, rounds late) a hold left undecided by them.
    assert "request-duration" in reason and "outside [-inf, 250]" in reason, reason
    for rolled_back in (faulty, slow):
        assert "outcome   rolled-back" in rolled_back
        assert "routing   v1 100%   v2 0%   (HTTPRoute default/reviews read back)" in rolled_back
        assert "traffic   v1 100%   v2   0%" in rolled_back
        assert "running   reviews-v1\n" in rolled_back
    for _, stderr in outputs.values():
        assert "Traceback" not in stderr


def test_an_unknown_scenario_is_bad_input(prefect_api_url):
    demo = start_demo("no-such-scenario", prefect_api_url)
    _, stderr = demo.communicate(timeout=300)
    assert demo.returncode == BAD_INPUT
    assert "unknown scenario 'no-such-scenario'" in stderr
    assert len(stderr.strip().splitlines()) == 1
