"""Holds on the real stack: the sandbox's traffic, a real Prometheus, the Analyzer.

The BookInfo plan's metrics (success rate at least 99 %, p99 at most 100 ms) with a look
every 5 s, a step of 20 % held 2 minutes, 100 requests a second per service: where a
healthy canary used to be rolled back by one error tipping a 5 s window under the floor.
Several independent runs (each its own service, in sandboxes of different seeds) are held
at once, with the machinery of bench/judgement_e2e.py; the assertions are on what each
Analyzer decided.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import yaml

from canary.analysis.analyzer import Decision
from canary.plan import AnalysisSpec
from tests.support.prometheus import require_prometheus

BENCH = Path(__file__).resolve().parents[2] / "bench"
PLAN = Path(__file__).resolve().parents[2] / "configs" / "bookinfo-reviews.yaml"
HEALTHY_RUNS = 4
# Two runs per sandbox: the runs are drawn from three sandboxes seeded 1600, 1601, 1602.
SETTING = {"interval": 5.0, "looks": 24, "share": 20, "warmup": 10.0, "seed": 16, "sandbox_runs": 2}


def _load(name: str):
    sys.path.insert(0, str(BENCH))  # judgement_e2e imports the simulated bench beside it
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


e2e = _load("judgement_e2e")
sim = e2e.sim


def bookinfo_analysis(kind: str) -> AnalysisSpec:
    """The shipped plan's analysis section with looks every 5 s and the given judge."""
    section = yaml.safe_load(PLAN.read_text())["analysis"]
    section = {k: v for k, v in section.items() if k not in ("stepWeights", "stepWeight")}
    return AnalysisSpec.model_validate(section | {"interval": "5s", "judge": {"kind": kind}})


@pytest.fixture(scope="module")
def held() -> list:
    """Every run held once (about two and a half minutes), judged as each run says."""
    require_prometheus()
    healthy = sim.Scenario("healthy", sim.BASELINE, rps=100.0)
    plus_1pt = sim.Scenario("errors+1pt", sim.PLUS_1PT, rps=100.0)
    runs = [e2e.Run(healthy, f"healthy-{i}", 0.0) for i in range(1, HEALTHY_RUNS + 1)]
    runs += [e2e.Run(plus_1pt, f"err1-{i}", 0.0) for i in (1, 2)]
    for index, run in enumerate(runs):
        run.offset = SETTING["interval"] * index / len(runs)
    judges = {kind: bookinfo_analysis(kind) for kind in ("sequential", "threshold")}

    def specs(run) -> dict:
        return judges if run.scenario.name == "healthy" else {"sequential": judges["sequential"]}

    e2e.run_analyses(runs, specs, e2e.Setting(**SETTING))
    return runs


@pytest.mark.parametrize("judge", ["sequential", "threshold"])
def test_a_healthy_canary_held_two_minutes_passes_with_the_bookinfo_metrics(held, judge):
    healthy = [r for r in held if r.scenario.name == "healthy"]
    assert len(healthy) == HEALTHY_RUNS
    for run in healthy:
        assert judge not in run.rolled_back, (run.service, run.reasons.get(judge))
        assert not run.paused.get(judge), (run.service, run.reasons.get(judge))
        last = run.last[judge]
        assert last.check == SETTING["looks"]  # every look was made
        assert last.decision is Decision.CONTINUE, (run.service, last.reason)


def test_a_canary_one_point_worse_is_rolled_back_by_the_sequential_test(held):
    worse = [r for r in held if r.scenario.name == "errors+1pt"]
    assert worse
    for run in worse:
        assert "sequential" in run.rolled_back, (run.service, run.last["sequential"].reason)
        reason = run.reasons["sequential"]
        assert "request-success-rate (sequential test: canary 5xx rate above the stable's" in (
            reason
        ), reason
        assert "the sequential test's rejection is final" in reason


def test_the_sequential_tests_counted_the_hold_s_canary_requests_once(held):
    """20 % of 100 requests a second for two minutes: nothing counted twice or missed."""
    expected = 100 * SETTING["interval"] * SETTING["looks"] * SETTING["share"] / 100
    for run in held:
        if run.scenario.name == "healthy":
            counted = run.last["sequential"].metrics[0].statistic["canary_requests"]
            assert 0.9 * expected <= counted <= 1.1 * expected, (run.service, counted)
