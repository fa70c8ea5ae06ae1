"""The benchmark measures what the analyzer does: replaying its simulated streams through
the real Analyzer gives the same rollback looks, and its latency model is the sandbox's."""

from __future__ import annotations

import importlib.util
import math
import random
import re
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
    """Answers the analyzer's queries from one simulated run, one interval per check."""

    def __init__(self, st: bench.Streams, run: int):
        self.st, self.r = st, run

    def _k(self, at: float) -> int:
        return round(at / bench.INTERVAL_S) - 1

    def _series(self, promql: str, k: int) -> float | None:
        st, r = self.st, self.r
        canary = f'destination_workload="{CANARY}"' in promql
        n = st.n[r, k] if canary else st.m[r, k]
        errors = st.x[r, k] if canary else st.y[r, k]
        buckets = st.bc[r, k] if canary else st.bs[r, k]
        if "histogram_quantile" in promql:
            return None if n == 0 else bench.p99(buckets)
        if "or vector(0)" in promql:
            return None if n == 0 else 100.0 * (n - errors) / n
        if "_count" in promql:
            le = float(re.search(r'le="([^"]+)"', promql).group(1))
            return float(buckets[bench.BOUNDS.index(le) + 1 :].sum())
        if 'response_code=~"5.*"' in promql:
            return float(errors)
        return float(n)

    def query(self, promql: str, at: float | None = None) -> float | None:
        return self._series(promql, self._k(at))

    def query_vector(self, promql: str, at: float | None = None):
        cumulative = np.cumsum(self.st.baseline[self.r])
        return [
            ({"le": "+Inf" if math.isinf(b) else f"{b:g}"}, float(c))
            for b, c in zip(bench.BOUNDS, cumulative, strict=True)
        ]

    def query_range(self, promql: str, start: float, end: float, step: float):
        points = []
        for k in range(self._k(start), self._k(end) + 1):
            value = self._series(promql, k)
            if value is not None:
                points.append(((k + 1) * bench.INTERVAL_S, value))
        return points


def replay(spec: AnalysisSpec, st: bench.Streams) -> np.ndarray:
    looks = np.zeros(st.runs, dtype=int)
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
        for k in range(bench.LOOKS):
            if a.check().decision is Decision.ROLLBACK:
                looks[r] = k + 1
                break
    return looks


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


@pytest.fixture(scope="module")
def streams() -> dict[str, tuple[bench.Streams, bench.Values]]:
    return bench.streams_for(["healthy", "errors+1pt", "p99+100ms"], 12, seed=3)


@pytest.mark.parametrize("name", ["healthy", "errors+1pt", "p99+100ms"])
def test_threshold_bench_rule_is_the_analyzers(streams, name):
    st, v = streams[name]
    cfg = bench.ThresholdConfig(99.0, 100.0, 2, "never")
    expected = bench.threshold_looks(v, cfg)
    got = replay(spec({"kind": "threshold"}, 2, "never", 99.0, 100.0), st)
    assert got.tolist() == expected.tolist()


@pytest.mark.parametrize("name", ["healthy", "errors+1pt", "p99+100ms"])
def test_mann_whitney_bench_rule_is_the_analyzers(streams, name):
    st, v = streams[name]
    cfg = bench.MannWhitneyConfig(0.9, 1, "threshold")
    expected = bench.mw_looks(bench.mw_verdicts(v, (0.9,)), 0, cfg)
    got = replay(spec({"kind": "mann-whitney", "confidence": 0.9}), st)
    assert got.tolist() == expected.tolist()


@pytest.mark.parametrize("name", ["healthy", "errors+1pt", "p99+100ms"])
def test_sequential_bench_rule_is_the_analyzers(streams, name):
    st, _ = streams[name]
    got = replay(spec({"kind": "sequential"}), st)
    assert got.tolist() == bench.sequential_looks(st).tolist()


def test_bench_runs_end_to_end_small():
    threshold, mann_whitney = (
        bench.ThresholdConfig(99, 250, 3, "threshold"),
        bench.MannWhitneyConfig(0.98, 1, "threshold"),
    )
    rows = bench.evaluate(5, 1, threshold, mann_whitney)
    assert len(rows) == 3 * len(bench.SCENARIOS)
    assert "| errors+5pt | sequential |" in bench.table(rows)
