"""The benchmark measures what the analyzer does: replaying its simulated streams through
the real Analyzer gives the same rollback looks, and its latency model is the sandbox's."""

from __future__ import annotations

import importlib.util
import math
import random
import sys
from pathlib import Path

import numpy as np
import pytest

from canary.analysis.analyzer import Analyzer, Decision
from canary.plan import AnalysisSpec
from sandbox.mesh.scenarios import BASELINE


def _load_bench():
    path = Path(__file__).resolve().parents[2] / "bench" / "judgement.py"
    spec = importlib.util.spec_from_file_location("bench_judgement", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


bench = _load_bench()

CANARY, STABLE = "app-v2", "app-v1"


def test_bucket_model_is_the_sandbox_latency_model():
    behaviour = bench.SCENARIOS[5].canary  # p99 + 100 ms
    rng = random.Random(1)
    samples = [behaviour.sample(rng)[1] for _ in range(20_000)]
    edges = [0.0, *bench.BOUNDS[:-1], math.inf]
    observed = np.histogram(samples, bins=edges)[0] / len(samples)
    expected = bench.bucket_probabilities(behaviour)
    assert np.allclose(observed, expected, atol=0.01)
    assert bench.bucket_probabilities(BASELINE)[-1] < 1e-9


class Replay:
    """Answers the analyzer's counter queries from one simulated run: at time 10 k the
    counters hold the first k intervals (the stable's also its 10 minutes before)."""

    def __init__(self, st: bench.Streams, run: int):
        self.st, self.r = st, run

    def _cumulative(self, canary: bool, at: float) -> tuple[float, float, np.ndarray]:
        st, r = self.st, self.r
        k = round(at / bench.INTERVAL_S)
        errors, buckets = (st.x, st.bc) if canary else (st.y, st.bs)
        before = np.zeros(len(bench.BOUNDS)) if canary else st.baseline[r].astype(float)
        if k < 0:
            before = np.zeros(len(bench.BOUNDS))
        counts = before + buckets[r, : max(k, 0)].sum(axis=0)
        return float(counts.sum()), float(errors[r, : max(k, 0)].sum()), counts

    def query_vector(self, promql: str, at: float | None = None):
        canary = f'destination_workload="{CANARY}"' in promql
        requests, errors, buckets = self._cumulative(canary, at or 0.0)
        if "sum by (le)" in promql:
            return [
                ({"le": "+Inf" if math.isinf(b) else f"{b:g}"}, float(c))
                for b, c in zip(bench.BOUNDS, np.cumsum(buckets), strict=True)
            ]
        return [({"response_code": "200"}, requests - errors), ({"response_code": "500"}, errors)]

    def query(self, promql: str, at: float | None = None) -> float | None:
        raise AssertionError(f"judging built-in metrics reads counters only, not {promql}")

    def query_range(self, promql: str, start: float, end: float, step: float):
        raise AssertionError(f"judging built-in metrics reads counters only, not {promql}")


def replay(spec: AnalysisSpec, st: bench.Streams) -> tuple[np.ndarray, np.ndarray]:
    """Per run: the look that rolled back (0: none), and whether the hold's end paused."""
    looks = np.zeros(st.runs, dtype=int)
    paused = np.zeros(st.runs, dtype=bool)
    for r in range(st.runs):
        clock = iter(bench.INTERVAL_S * np.arange(1, bench.LOOKS + 1))
        a = Analyzer(
            spec,
            Replay(st, r),
            "default",
            "app",
            CANARY,
            STABLE,
            clock=lambda c=clock: float(next(c)),
        )
        for k in range(1, bench.LOOKS + 1):
            result = a.check(step="step-1", hold_ending=k == bench.LOOKS)
            if result.decision is Decision.ROLLBACK:
                looks[r] = k
                break
            paused[r] = result.decision is Decision.PAUSE
    return looks, paused


def spec(judge: dict, threshold: int = 1, limit: str = "threshold", sr=None, p99=None):
    metrics = [{"name": "request-success-rate"}, {"name": "request-duration"}]
    if sr is not None:
        metrics[0]["thresholdRange"] = {"min": sr}
        metrics[1]["thresholdRange"] = {"max": p99}
    return AnalysisSpec.model_validate(
        {
            "interval": "10s",
            "threshold": threshold,
            "maxFailures": bench.limit_of(threshold, limit),
            "metrics": metrics,
            "judge": judge,
        }
    )


NAMES = ["healthy", "errors+1pt", "p99+100ms", "very-low-traffic+5pt"]


@pytest.fixture(scope="module")
def streams() -> dict[str, tuple[bench.Streams, bench.Values]]:
    return bench.streams_for(NAMES, 12, seed=3)


def same(got: tuple[np.ndarray, np.ndarray], expected: tuple[np.ndarray, np.ndarray]) -> None:
    assert got[0].tolist() == expected[0].tolist()  # the looks that rolled back
    assert got[1].tolist() == expected[1].tolist()  # the holds whose end paused


@pytest.mark.parametrize("name", NAMES)
def test_threshold_bench_rule_is_the_analyzers(streams, name):
    st, _ = streams[name]
    cfg = bench.ThresholdConfig(99.0, 100.0, 2, "never", 0.95)
    judge = {"kind": "threshold", "confidence": 0.95}
    same(replay(spec(judge, 2, "never", 99.0, 100.0), st), bench.threshold_outcome(st, cfg))


@pytest.mark.parametrize("name", NAMES)
def test_mann_whitney_bench_rule_is_the_analyzers(streams, name):
    st, v = streams[name]
    cfg = bench.MannWhitneyConfig(0.9, 1, "threshold")
    got = replay(spec({"kind": "mann-whitney", "confidence": 0.9}), st)
    same(got, bench.mw_outcome(v, cfg))


@pytest.mark.parametrize("name", NAMES)
def test_sequential_bench_rule_is_the_analyzers(streams, name):
    st, _ = streams[name]
    same(replay(spec({"kind": "sequential"}), st), bench.sequential_outcome(st))


def test_bench_runs_end_to_end_small():
    threshold, mann_whitney = (
        bench.ThresholdConfig(99, 250, 3, "threshold"),
        bench.MannWhitneyConfig(0.98, 1, "threshold"),
    )
    rows = bench.evaluate(5, 1, threshold, mann_whitney)
    assert len(rows) == 3 * len(bench.SCENARIOS)
    assert "| errors+5pt | sequential |" in bench.table(rows)
