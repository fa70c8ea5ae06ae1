"""Benchmark of the three judges on simulated request streams, seeded and repeatable.

    python bench/judgement.py [--runs 200] [--calibration-runs 500] [--seed 7]

Traffic: 50 requests/s in total (1/s for the low-traffic scenarios), 10 % to the canary;
a look every 10 s for 10 minutes (60 looks). Versions behave as the sandbox simulator's
``VersionBehaviour`` says (error rate; lognormal latency with a median and a p99); requests
are simulated as counts per interval: binomial errors and multinomial latency-bucket counts
over Istio's default buckets, which is what Prometheus would see.

Judges, as the analyzer runs them:
* threshold: success rate and p99 of the canary in each interval against a thresholdRange;
  fewer than 20 canary requests is no data (hold); rollback at ``threshold`` failed checks
  in a row or ``maxFailures`` in all.
* mann-whitney: per-interval success rates and p99s of canary and stable since the start,
  Kayenta's classification and score; same counting of failed checks.
* sequential: the mixture likelihood-ratio test on 5xx counts and on counts of requests
  slower than the stable's p99 bucket, alpha 0.01 split over the two (0.005 each).

The threshold and Mann-Whitney judges are calibrated first, on separate seeds: among their
settings whose false-rollback rate is at most 1 % (the sequential judge's alpha) on both the
healthy and the noisy-healthy scenario, the one with the lowest mean time to decision on the
faulty scenarios (a miss counts as the horizon plus one interval). The sequential judge is
not tuned: it runs at its default alpha.
"""

from __future__ import annotations

import argparse
import itertools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
from scipy.stats import norm

from canary.analysis.judges import (
    Classification,
    classify_shift,
    comparable,
    shift_interval,
)
from canary.analysis.sequential import RateRatioTest, histogram_quantile, slow_bound
from canary.analysis.spec import Direction
from sandbox.mesh.istio_metrics import DURATION_BUCKETS_MS
from sandbox.mesh.scenarios import BASELINE, VersionBehaviour

INTERVAL_S = 10.0
LOOKS = 60
CANARY_SHARE = 0.10
MIN_REQUESTS = 20
BASELINE_WINDOW_S = 600.0
ALPHA = 0.01
FA_TARGET = 0.01
MISS_S = (LOOKS + 1) * INTERVAL_S
BOUNDS = (*map(float, DURATION_BUCKETS_MS), math.inf)
_Z99 = norm.ppf(0.99)


@dataclass(frozen=True)
class Scenario:
    name: str
    canary: VersionBehaviour
    stable: VersionBehaviour = BASELINE
    rps: float = 50.0
    noisy: bool = False  # shared bursts of errors, latency and traffic for both versions

    @property
    def faulty(self) -> bool:
        return self.canary != self.stable


SCENARIOS = (
    Scenario("healthy", BASELINE),
    Scenario("noisy-healthy", BASELINE, noisy=True),
    Scenario("low-traffic", BASELINE, rps=1.0),
    Scenario("errors+1pt", replace(BASELINE, error_rate=BASELINE.error_rate + 0.01)),
    Scenario("errors+5pt", replace(BASELINE, error_rate=BASELINE.error_rate + 0.05)),
    Scenario("p99+100ms", replace(BASELINE, latency_p99_ms=BASELINE.latency_p99_ms + 100)),
    Scenario("low-traffic+5pt", replace(BASELINE, error_rate=BASELINE.error_rate + 0.05), rps=1.0),
)
TUNING = ("errors+1pt", "errors+5pt", "p99+100ms")


# --- simulation ----------------------------------------------------------------------------


def bucket_probabilities(
    behaviour: VersionBehaviour, scale: np.ndarray | float = 1.0
) -> np.ndarray:
    """P(latency in each Istio bucket) for the behaviour's lognormal, latency x ``scale``."""
    mu = np.log(behaviour.latency_median_ms * np.asarray(scale, dtype=float))[..., None]
    sigma = (math.log(behaviour.latency_p99_ms) - math.log(behaviour.latency_median_ms)) / _Z99
    finite = np.array(BOUNDS[:-1])
    if sigma == 0:
        cdf = (np.exp(mu) <= finite).astype(float)
    else:
        cdf = norm.cdf((np.log(finite) - mu) / sigma)
    cdf = np.concatenate([cdf, np.ones((*cdf.shape[:-1], 1))], axis=-1)
    return np.diff(cdf, axis=-1, prepend=0.0)


@dataclass
class Streams:
    """Per run (rows) and interval (columns): requests, 5xx and latency-bucket counts."""

    n: np.ndarray  # canary requests
    m: np.ndarray  # stable requests
    x: np.ndarray  # canary 5xx
    y: np.ndarray  # stable 5xx
    bc: np.ndarray  # canary bucket counts (runs, looks, buckets), not cumulative
    bs: np.ndarray
    baseline: np.ndarray  # stable bucket counts in the 10 minutes before (runs, buckets)

    @property
    def runs(self) -> int:
        return self.n.shape[0]


def simulate(s: Scenario, runs: int, rng: np.random.Generator) -> Streams:
    shape = (runs, LOOKS)
    ones = np.ones(shape)
    traffic = rng.gamma(4.0, 0.25, shape) if s.noisy else ones
    errors = rng.gamma(0.5, 2.0, shape) if s.noisy else ones
    latency = rng.lognormal(0.0, 0.25, shape) if s.noisy else ones
    total = rng.poisson(s.rps * INTERVAL_S * traffic)
    n = rng.binomial(total, CANARY_SHARE)
    m = total - n
    x = rng.binomial(n, np.clip(s.canary.error_rate * errors, 0, 1))
    y = rng.binomial(m, np.clip(s.stable.error_rate * errors, 0, 1))
    bc = rng.multinomial(n, bucket_probabilities(s.canary, latency))
    bs = rng.multinomial(m, bucket_probabilities(s.stable, latency))
    before = rng.poisson(s.rps * (1 - CANARY_SHARE) * BASELINE_WINDOW_S, runs)
    baseline = rng.multinomial(before, bucket_probabilities(s.stable))
    return Streams(n, m, x, y, bc, bs, baseline)


def p99(buckets: np.ndarray) -> float:
    cumulative = np.cumsum(buckets)
    value = histogram_quantile(0.99, list(zip(BOUNDS, cumulative.tolist(), strict=True)))
    return math.nan if value is None else value


@dataclass
class Values:
    """Per-interval metric values as Prometheus would return them; NaN: no data."""

    sr_c: np.ndarray
    sr_s: np.ndarray
    p99_c: np.ndarray
    p99_s: np.ndarray


def values(st: Streams) -> Values:
    def rate(ok: np.ndarray, total: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(total >= MIN_REQUESTS, 100.0 * ok / total, np.nan)

    def quantiles(b: np.ndarray, total: np.ndarray) -> np.ndarray:
        q = np.array([[p99(b[r, k]) for k in range(LOOKS)] for r in range(b.shape[0])])
        return np.where(total >= MIN_REQUESTS, q, np.nan)

    return Values(
        rate(st.n - st.x, st.n),
        rate(st.m - st.y, st.m),
        quantiles(st.bc, st.n),
        quantiles(st.bs, st.m),
    )


# --- counting failed checks -------------------------------------------------------------------


def rollback_looks(fail: np.ndarray, judged: np.ndarray, threshold: int, limit: int) -> np.ndarray:
    """First look (1-based) that rolls back, per run; 0 when none does.

    A failed check counts; a passing one resets the run of failures; no data (not judged)
    does neither, as with noData.onNoData: hold.
    """
    runs = fail.shape[0]
    row = np.zeros(runs, dtype=int)
    total = np.zeros(runs, dtype=int)
    first = np.zeros(runs, dtype=int)
    for k in range(fail.shape[1]):
        row = np.where(fail[:, k], row + 1, np.where(judged[:, k], 0, row))
        total += fail[:, k]
        hit = (first == 0) & ((row >= threshold) | (total >= limit))
        first[hit] = k + 1
    return first


COUNTING = [(c, limit) for c in range(1, 7) for limit in ("threshold", "never")]


def limit_of(threshold: int, limit: str) -> int:
    return threshold if limit == "threshold" else LOOKS + 1


# --- threshold judge -------------------------------------------------------------------------


@dataclass(frozen=True)
class ThresholdConfig:
    min_success: float
    max_p99: float
    threshold: int
    limit: str

    def __str__(self) -> str:
        return (
            f"successRate >= {self.min_success:g}, p99 <= {self.max_p99:g} ms, "
            f"threshold {self.threshold}, maxFailures "
            f"{'= threshold' if self.limit == 'threshold' else 'unset (in a row only)'}"
        )


def threshold_looks(v: Values, cfg: ThresholdConfig) -> np.ndarray:
    judged = ~np.isnan(v.sr_c) & ~np.isnan(v.p99_c)
    with np.errstate(invalid="ignore"):
        fail = judged & ((v.sr_c < cfg.min_success) | (v.p99_c > cfg.max_p99))
    return rollback_looks(fail, judged, cfg.threshold, limit_of(cfg.threshold, cfg.limit))


THRESHOLD_GRID = [
    ThresholdConfig(sr, p, c, limit)
    for sr, p, (c, limit) in itertools.product(
        (99.0, 97.0, 95.0, 93.0, 91.0), (100.0, 250.0, 500.0, 1000.0), COUNTING
    )
]


# --- Mann-Whitney judge ----------------------------------------------------------------------


CONFIDENCES = (0.9, 0.95, 0.98, 0.99, 0.995, 0.999)
TOLERANCE = 0.25
MIN_SAMPLES = 5


@dataclass(frozen=True)
class MannWhitneyConfig:
    confidence: float
    threshold: int
    limit: str

    def __str__(self) -> str:
        return (
            f"confidence {self.confidence:g}, tolerance {TOLERANCE}, minSamples "
            f"{MIN_SAMPLES}, threshold {self.threshold}, maxFailures "
            f"{'= threshold' if self.limit == 'threshold' else 'unset (in a row only)'}"
        )


MW_GRID = [MannWhitneyConfig(c, t, limit) for c in CONFIDENCES for t, limit in COUNTING]


def classes(
    canary: np.ndarray, stable: np.ndarray, direction: Direction, confidences: Sequence[float]
) -> list[Classification]:
    """Kayenta's class at each confidence, sorting the pairwise differences once."""
    early = comparable(canary.tolist(), stable.tolist(), MIN_SAMPLES)
    if early is not None:
        return [early] * len(confidences)
    diffs = np.sort(np.subtract.outer(canary, stable).ravel())
    estimate = float(np.median(diffs))
    out = []
    for conf in confidences:
        low, high = shift_interval(diffs, len(canary), len(stable), conf)
        out.append(classify_shift(estimate, low, high, direction, TOLERANCE))
    return out


def mw_verdicts(v: Values, confidences: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Per (run, look, confidence): failed check, and judged (not no-data).

    Two metrics of equal weight: one High/Low scores 50, a Fail (below marginal 75); one
    Nodata is half the metrics, so no data.
    """
    runs = v.sr_c.shape[0]
    fail = np.zeros((runs, LOOKS, len(confidences)), dtype=bool)
    judged = np.zeros_like(fail)
    metrics = ((v.sr_c, v.sr_s, "decrease"), (v.p99_c, v.p99_s, "increase"))
    for r in range(runs):
        for k in range(1, LOOKS + 1):
            per_metric = []
            for c_vals, s_vals, direction in metrics:
                c = c_vals[r, :k]
                s = s_vals[r, :k]
                per_metric.append(classes(c[~np.isnan(c)], s[~np.isnan(s)], direction, confidences))
            for i in range(len(confidences)):
                got = {m[i] for m in per_metric}
                judged[r, k - 1, i] = Classification.NODATA not in got
                fail[r, k - 1, i] = judged[r, k - 1, i] and bool(
                    got & {Classification.HIGH, Classification.LOW}
                )
    return fail, judged


def mw_looks(
    verdicts: tuple[np.ndarray, np.ndarray], index: int, cfg: MannWhitneyConfig
) -> np.ndarray:
    fail, judged = verdicts
    return rollback_looks(
        fail[:, :, index], judged[:, :, index], cfg.threshold, limit_of(cfg.threshold, cfg.limit)
    )


# --- sequential judge ------------------------------------------------------------------------


def sequential_looks(st: Streams, alpha: float = ALPHA, prior_scale: float = 1.5) -> np.ndarray:
    first = np.zeros(st.runs, dtype=int)
    for r in range(st.runs):
        errors = RateRatioTest(alpha / 2, prior_scale)
        slow = RateRatioTest(alpha / 2, prior_scale)
        baseline = list(zip(BOUNDS, np.cumsum(st.baseline[r]).tolist(), strict=True))
        target = histogram_quantile(0.99, baseline)
        bound = None if target is None else slow_bound(baseline, target)
        above = BOUNDS.index(bound) + 1 if bound is not None else None
        for k in range(LOOKS):
            n, m = int(st.n[r, k]), int(st.m[r, k])
            rejected = errors.update(int(st.x[r, k]), n, int(st.y[r, k]), m)
            if above is not None:
                slow_c = int(st.bc[r, k, above:].sum())
                slow_s = int(st.bs[r, k, above:].sum())
                rejected = slow.update(slow_c, n, slow_s, m) or rejected
            if rejected:
                first[r] = k + 1
                break
    return first


# --- calibration and summary -------------------------------------------------------------------


@dataclass
class Outcome:
    rate: float  # share of runs rolled back within the horizon
    median_s: float  # time to decision over all runs; inf: most runs never decided
    p90_s: float
    mean_s: float  # misses count as the horizon plus one interval


def outcome(first: np.ndarray) -> Outcome:
    decided = first > 0
    times = np.where(decided, first * INTERVAL_S, math.inf)
    median, p90 = np.quantile(times, (0.5, 0.9), method="inverted_cdf")
    return Outcome(
        rate=float(np.mean(decided)),
        median_s=float(median),
        p90_s=float(p90),
        mean_s=float(np.mean(np.where(decided, times, MISS_S))),
    )


def calibrate(configs: list, looks_of: Callable[[str, object], np.ndarray]) -> object:
    """The setting with false rollbacks <= target on both healthy scenarios and the lowest
    mean time to decision on the tuning faults."""
    best, best_time = None, math.inf
    for cfg in configs:
        if max(outcome(looks_of(h, cfg)).rate for h in ("healthy", "noisy-healthy")) > FA_TARGET:
            continue
        mean_time = float(np.mean([outcome(looks_of(f, cfg)).mean_s for f in TUNING]))
        if mean_time < best_time:
            best, best_time = cfg, mean_time
    if best is None:
        raise RuntimeError("no setting meets the false-rollback target")
    return best


def streams_for(
    names: Sequence[str], runs: int, seed: int, faulty_runs: int | None = None
) -> dict[str, tuple[Streams, Values]]:
    out = {}
    for i, s in enumerate(SCENARIOS):
        if s.name not in names:
            continue
        rng = np.random.default_rng([seed, i])
        count = faulty_runs if (s.faulty and faulty_runs) else runs
        st = simulate(s, count, rng)
        out[s.name] = (st, values(st))
    return out


def calibrate_all(runs: int, seed: int) -> tuple[ThresholdConfig, MannWhitneyConfig]:
    data = streams_for(("healthy", "noisy-healthy", *TUNING), runs, seed, max(100, runs // 4))
    threshold = calibrate(THRESHOLD_GRID, lambda name, cfg: threshold_looks(data[name][1], cfg))
    verdicts = {name: mw_verdicts(v, CONFIDENCES) for name, (_, v) in data.items()}
    mann_whitney = calibrate(
        MW_GRID,
        lambda name, cfg: mw_looks(verdicts[name], CONFIDENCES.index(cfg.confidence), cfg),
    )
    return threshold, mann_whitney


def evaluate(
    runs: int, seed: int, threshold: ThresholdConfig, mann_whitney: MannWhitneyConfig
) -> list[tuple[Scenario, str, Outcome]]:
    data = streams_for([s.name for s in SCENARIOS], runs, seed)
    rows = []
    for s in SCENARIOS:
        st, v = data[s.name]
        mw = mw_verdicts(v, (mann_whitney.confidence,))
        rows.append((s, "threshold", outcome(threshold_looks(v, threshold))))
        rows.append((s, "mann-whitney", outcome(mw_looks(mw, 0, mann_whitney))))
        rows.append((s, "sequential", outcome(sequential_looks(st))))
    return rows


def table(rows: list[tuple[Scenario, str, Outcome]]) -> str:
    """Faulty scenarios: detection rate and time to rollback over all runs (a run that
    never rolled back counts as never, so a median needs half the runs detected)."""
    horizon = f"> {LOOKS * INTERVAL_S:.0f}"

    def secs(value: float) -> str:
        return horizon if math.isinf(value) else f"{value:.0f}"

    lines = [
        "| scenario | judge | false rollbacks | detected | median s | p90 s |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for s, judge, o in rows:
        rate = f"{100 * o.rate:.1f} %"
        found = ("—", rate, secs(o.median_s), secs(o.p90_s))
        cells = found if s.faulty else (rate, "—", "—", "—")
        lines.append(f"| {s.name} | {judge} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200, help="runs per scenario")
    parser.add_argument(
        "--calibration-runs",
        type=int,
        default=500,
        help="runs per healthy scenario when calibrating",
    )
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    started = time.monotonic()
    threshold, mann_whitney = calibrate_all(args.calibration_runs, args.seed + 1)
    print(f"threshold judge, calibrated: {threshold}")
    print(f"mann-whitney judge, calibrated: {mann_whitney}")
    print(f"sequential judge: alpha {ALPHA} (0.005 per metric), priorScale 1.5, not tuned")
    print(
        f"{args.runs} runs per scenario; 10 % canary; a look every {INTERVAL_S:.0f} s for "
        f"{LOOKS * INTERVAL_S / 60:.0f} min; seed {args.seed}\n"
    )
    print(table(evaluate(args.runs, args.seed, threshold, mann_whitney)))
    print(f"\n({time.monotonic() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
