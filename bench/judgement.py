"""Benchmark of the three judges on simulated request streams, seeded and repeatable.

    python bench/judgement.py [--runs 200] [--calibration-runs 500] [--seed 7]

Traffic: 50 requests/s in total (10/s for the low-traffic scenarios, 1/s for the very low
ones), 10 % to the canary; a look every 10 s for a 10-minute hold (60 looks). Versions
behave as the sandbox simulator's ``VersionBehaviour`` says (error rate; lognormal latency
with a median and a p99); requests are simulated as counts per interval: binomial errors
and multinomial latency-bucket counts over Istio's default buckets, which is what the
analyzer reads from Prometheus's counters.

Judges, as the analyzer runs them:
* threshold: success-rate floor and p99 ceiling of the canary, judged on the interval's
  counts: a bound fails only when the one-sided Clopper-Pearson bound at ``confidence``
  is past it; an interval that neither passes nor fails (or has fewer than 20 canary
  requests) pools its counts into the next look; rollback at ``threshold`` failed checks
  in a row or ``maxFailures`` in all.
* mann-whitney: per-interval success rates and p99s of canary and stable since the start,
  Kayenta's classification and score; same counting of failed checks.
* sequential: the mixture likelihood-ratio test on 5xx counts and on counts of requests
  slower than the stable's p99 bucket, alpha 0.01 split over the two (0.005 each).

At the end of the hold an undecided analysis pauses for a person: a threshold check whose
counts are still pooling, a Mann-Whitney check without enough windows, or a sequential test
whose traffic could not have caught a canary one point worse than the stable.

The threshold and Mann-Whitney judges are calibrated first, on separate seeds: among their
settings whose false-rollback rate is at most 1 % (the sequential judge's alpha) on both the
healthy and the noisy-healthy scenario, the one with the lowest mean time to decision on the
faulty scenarios (a miss counts as the horizon plus one interval). The sequential judge is
not tuned: it runs at its default alpha. The settings chosen are the documented ones
(``DOCUMENTED``), which ``bench/judgement_e2e.py`` runs on the real stack.
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

from canary.analysis.counts import lower_bound
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
DETECTABLE_POINTS = 1.0  # judge.detectablePoints' default
FA_TARGET = 0.01
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


PLUS_1PT = replace(BASELINE, error_rate=BASELINE.error_rate + 0.01)
PLUS_5PT = replace(BASELINE, error_rate=BASELINE.error_rate + 0.05)
# A scenario's streams are seeded by its place here: new ones go at the end.
SCENARIOS = (
    Scenario("healthy", BASELINE),
    Scenario("noisy-healthy", BASELINE, noisy=True),
    Scenario("low-traffic", BASELINE, rps=10.0),
    Scenario("errors+1pt", PLUS_1PT),
    Scenario("errors+5pt", PLUS_5PT),
    Scenario("p99+100ms", replace(BASELINE, latency_p99_ms=BASELINE.latency_p99_ms + 100)),
    Scenario("low-traffic+5pt", PLUS_5PT, rps=10.0),
    Scenario("very-low-traffic", BASELINE, rps=1.0),
    Scenario("very-low-traffic+5pt", PLUS_5PT, rps=1.0),
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
    confidence: float = 0.98

    def __str__(self) -> str:
        return (
            f"successRate >= {self.min_success:g}, p99 <= {self.max_p99:g} ms, "
            f"confidence {self.confidence:g}, threshold {self.threshold}, maxFailures "
            f"{'= threshold' if self.limit == 'threshold' else 'unset (in a row only)'}"
        )


# Per look: -1 failed, 0 undecided (pooling, or too few requests), 1 passed.
FAILED, UNDECIDED, PASSED = -1, 0, 1


def limit_verdicts(
    events: np.ndarray, totals: np.ndarray, limit: float, confidence: float
) -> np.ndarray:
    """Per (run, look): a bound "at most ``limit`` of the requests are events" judged on
    counts pooled since the last conclusive look, as the analyzer's count_check does."""
    runs, looks = events.shape
    verdicts = np.zeros((runs, looks), dtype=int)
    pool_x, pool_n = np.zeros(runs), np.zeros(runs)
    for k in range(looks):
        pool_x += events[:, k]
        pool_n += totals[:, k]
        with np.errstate(invalid="ignore", divide="ignore"):
            within = pool_x / pool_n <= limit
        failed = lower_bound(pool_x, pool_n, confidence) > limit
        passed = ~failed & within & (pool_n >= MIN_REQUESTS)
        verdicts[:, k] = np.where(failed, FAILED, np.where(passed, PASSED, UNDECIDED))
        conclusive = verdicts[:, k] != UNDECIDED
        pool_x[conclusive] = 0
        pool_n[conclusive] = 0
    return verdicts


def check_verdicts(*metrics: np.ndarray) -> np.ndarray:
    """Any metric failed: failed; else any undecided: undecided; else passed."""
    stacked = np.stack(metrics)
    return np.where(
        (stacked == FAILED).any(axis=0),
        FAILED,
        np.where((stacked == UNDECIDED).any(axis=0), UNDECIDED, PASSED),
    )


def slower_than(st: Streams, bound_ms: float) -> np.ndarray:
    """Canary requests slower than a bucket bound, per (run, look)."""
    return st.bc[:, :, BOUNDS.index(bound_ms) + 1 :].sum(axis=2)


def metric_verdicts(
    st: Streams, cfg: ThresholdConfig, memo: dict | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Per (run, look): the success-rate floor's and the p99 ceiling's verdicts."""
    memo = {} if memo is None else memo
    sr_key = ("sr", cfg.min_success, cfg.confidence)
    if sr_key not in memo:
        memo[sr_key] = limit_verdicts(st.x, st.n, 1 - cfg.min_success / 100, cfg.confidence)
    p99_key = ("p99", cfg.max_p99, cfg.confidence)
    if p99_key not in memo:
        memo[p99_key] = limit_verdicts(slower_than(st, cfg.max_p99), st.n, 0.01, cfg.confidence)
    return memo[sr_key], memo[p99_key]


def threshold_outcome(
    st: Streams, cfg: ThresholdConfig, memo: dict | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(first rollback look or 0, paused at the end of the hold) per run.

    At the last look, a metric still undecided is judged on the whole hold's counts, as
    the analyzer does at the end of a hold; what stays undecided pauses.
    """
    per_metric = metric_verdicts(st, cfg, memo)
    totals = st.n.sum(axis=1, keepdims=True)
    over_hold = (
        limit_verdicts(st.x.sum(axis=1, keepdims=True), totals, 1 - cfg.min_success / 100,
                       cfg.confidence),
        limit_verdicts(slower_than(st, cfg.max_p99).sum(axis=1, keepdims=True), totals, 0.01,
                       cfg.confidence),
    )  # fmt: skip
    at_end = [
        np.where(v[:, -1] == UNDECIDED, hold[:, 0], v[:, -1])
        for v, hold in zip(per_metric, over_hold, strict=True)
    ]
    verdicts = check_verdicts(*per_metric)
    verdicts[:, -1] = np.where(
        verdicts[:, -1] == UNDECIDED, check_verdicts(*at_end), verdicts[:, -1]
    )
    first = rollback_looks(
        verdicts == FAILED, verdicts == PASSED, cfg.threshold, limit_of(cfg.threshold, cfg.limit)
    )
    return first, (first == 0) & (verdicts[:, -1] == UNDECIDED)


THRESHOLD_GRID = [
    ThresholdConfig(sr, p, c, limit, conf)
    for sr, p, (c, limit), conf in itertools.product(
        (99.0, 97.0, 95.0, 93.0, 91.0),
        (100.0, 250.0, 500.0, 1000.0),
        COUNTING,
        (0.9, 0.95, 0.98, 0.99),
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


def mw_outcome(v: Values, cfg: MannWhitneyConfig) -> tuple[np.ndarray, np.ndarray]:
    """(first rollback look or 0, paused at the end of the hold: still no data) per run."""
    verdicts = mw_verdicts(v, (cfg.confidence,))
    first = mw_looks(verdicts, 0, cfg)
    return first, (first == 0) & ~verdicts[1][:, -1, 0]


# --- sequential judge ------------------------------------------------------------------------


def sequential_outcome(
    st: Streams, alpha: float = ALPHA, prior_scale: float = 1.5
) -> tuple[np.ndarray, np.ndarray]:
    """(first rollback look or 0, paused at the end of the hold) per run: a run that was
    not rejected pauses when either test's traffic could not have caught a canary
    ``DETECTABLE_POINTS`` worse than the stable."""
    first = np.zeros(st.runs, dtype=int)
    paused = np.zeros(st.runs, dtype=bool)
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
        else:
            tests = (errors, slow) if above is not None else (errors,)
            short = [t.requests_to_see(DETECTABLE_POINTS) is not None for t in tests]
            paused[r] = any(short) or above is None
    return first, paused


def sequential_looks(st: Streams, alpha: float = ALPHA, prior_scale: float = 1.5) -> np.ndarray:
    return sequential_outcome(st, alpha, prior_scale)[0]


# --- calibration and summary -------------------------------------------------------------------


@dataclass
class Outcome:
    rate: float  # share of runs rolled back within the horizon
    median_s: float  # time to decision over all runs; inf: most runs never decided
    p90_s: float
    mean_s: float  # misses count as the horizon plus one interval
    paused: float = 0.0  # share of runs that asked a person at the end of the hold
    horizon_s: float = LOOKS * INTERVAL_S


def outcome(
    first: np.ndarray,
    paused: np.ndarray | None = None,
    interval: float = INTERVAL_S,
    looks: int = LOOKS,
) -> Outcome:
    decided = first > 0
    times = np.where(decided, first * interval, math.inf)
    median, p90 = np.quantile(times, (0.5, 0.9), method="inverted_cdf")
    return Outcome(
        rate=float(np.mean(decided)),
        median_s=float(median),
        p90_s=float(p90),
        mean_s=float(np.mean(np.where(decided, times, (looks + 1) * interval))),
        paused=0.0 if paused is None else float(np.mean(paused)),
        horizon_s=looks * interval,
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
    memos: dict[str, dict] = {name: {} for name in data}

    def threshold_looks(name: str, cfg: ThresholdConfig) -> np.ndarray:
        return threshold_outcome(data[name][0], cfg, memos[name])[0]

    threshold = calibrate(THRESHOLD_GRID, threshold_looks)
    verdicts = {name: mw_verdicts(v, CONFIDENCES) for name, (_, v) in data.items()}
    mann_whitney = calibrate(
        MW_GRID,
        lambda name, cfg: mw_looks(verdicts[name], CONFIDENCES.index(cfg.confidence), cfg),
    )
    return threshold, mann_whitney


# The settings the calibration chose, as docs/judgement.md documents them.
DOCUMENTED = {
    "threshold": ThresholdConfig(99.0, 100.0, 3, "threshold", 0.9),
    "mann-whitney": MannWhitneyConfig(0.95, 2, "threshold"),
}
JUDGES = ("threshold", "mann-whitney", "sequential")


def evaluate(
    runs: int,
    seed: int,
    threshold: ThresholdConfig,
    mann_whitney: MannWhitneyConfig,
    names: Sequence[str] | None = None,
) -> list[tuple[Scenario, str, Outcome]]:
    chosen = [s for s in SCENARIOS if names is None or s.name in names]
    data = streams_for([s.name for s in chosen], runs, seed)
    rows = []
    for s in chosen:
        st, v = data[s.name]
        rows.append((s, "threshold", outcome(*threshold_outcome(st, threshold))))
        rows.append((s, "mann-whitney", outcome(*mw_outcome(v, mann_whitney))))
        rows.append((s, "sequential", outcome(*sequential_outcome(st))))
    return rows


def cells(s: Scenario, o: Outcome) -> tuple[str, ...]:
    """false rollbacks, detected, median s, p90 s, paused at the end."""

    def secs(value: float) -> str:
        return f"> {o.horizon_s:.0f}" if math.isinf(value) else f"{value:.0f}"

    rate, paused = f"{100 * o.rate:.1f} %", f"{100 * o.paused:.1f} %"
    if s.faulty:
        return ("—", rate, secs(o.median_s), secs(o.p90_s), paused)
    return (rate, "—", "—", "—", paused)


def table(rows: list[tuple[Scenario, str, Outcome]]) -> str:
    """Faulty scenarios: detection rate and time to rollback over all runs (a run that
    never rolled back counts as never, so a median needs half the runs detected)."""
    lines = [
        "| scenario | judge | false rollbacks | detected | median s | p90 s | paused at the end |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for s, judge, o in rows:
        lines.append(f"| {s.name} | {judge} | " + " | ".join(cells(s, o)) + " |")
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
    for judge, chosen in (("threshold", threshold), ("mann-whitney", mann_whitney)):
        same = "as documented" if chosen == DOCUMENTED[judge] else f"NOT {DOCUMENTED[judge]}"
        print(f"{judge} judge, calibrated: {chosen} ({same})")
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
