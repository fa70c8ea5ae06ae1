"""The judges: pure functions from metric values to verdicts (no Prometheus here).

* threshold: Flagger's rule, the canary's value must lie in the metric's thresholdRange;
  for the built-in metrics a window fails only when its request counts show the breach at
  the plan's confidence (see counts.py), and is otherwise inconclusive.
* mann-whitney: Kayenta's NetflixACAJudge, canary windows against stable windows with a
  two-sided Mann-Whitney U test, the Hodges-Lehmann shift and its confidence interval;
  classes High/Low/Pass/Nodata and a weighted score with pass and marginal bands.
* sequential: anytime-valid tests on event counts (see sequential.py).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np
from scipy.stats import mannwhitneyu, norm

from canary.analysis.counts import ShareLimit, ShareVerdict
from canary.analysis.sequential import RateRatioTest, ShareBoundTest
from canary.analysis.spec import Direction, ThresholdRange


class Verdict(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    NO_DATA = "no-data"
    # The counts neither show a breach nor meet the bound: they pool into the next check.
    INCONCLUSIVE = "inconclusive"
    MARGINAL = "marginal"  # mann-whitney score between the bands: a human decides


class Classification(StrEnum):
    HIGH = "High"
    LOW = "Low"
    PASS = "Pass"
    NODATA = "Nodata"


@dataclass(frozen=True)
class MetricVerdict:
    """One metric in one check: its values, the judge's statistic, the verdict, and why."""

    metric: str
    verdict: Verdict
    value: float | None = None  # the canary's value in this interval
    stable: float | None = None  # the stable's, when the judge compares
    requests: float | None = None  # canary requests in this interval
    classification: Classification | None = None
    statistic: dict[str, Any] = field(default_factory=dict)
    reason: str = ""
    critical: bool = False
    weight: float = 1.0
    final: bool = False  # a sequential rejection: no later check can undo it


@dataclass(frozen=True)
class JudgeOutcome:
    verdict: Verdict
    metrics: tuple[MetricVerdict, ...]
    reason: str
    score: float | None = None
    final: bool = False


# --- threshold ---------------------------------------------------------------------------


def threshold_check(
    metric: str,
    value: float | None,
    bounds: ThresholdRange,
    requests: float | None = None,
    min_requests: int = 0,
    *,
    critical: bool = False,
    weight: float = 1.0,
) -> MetricVerdict:
    """Flagger's check, except that too little traffic or no value is no-data, not a fail."""
    common = {"value": value, "requests": requests, "critical": critical, "weight": weight}
    stat = {"min": bounds.min, "max": bounds.max}
    if requests is not None and requests < min_requests:
        return MetricVerdict(
            metric,
            Verdict.NO_DATA,
            classification=Classification.NODATA,
            statistic=stat,
            reason=f"{_num(requests)} canary requests, fewer than {min_requests}",
            **common,
        )
    if value is None:
        return MetricVerdict(
            metric,
            Verdict.NO_DATA,
            classification=Classification.NODATA,
            statistic=stat,
            reason="the query returned no value",
            **common,
        )
    if bounds.holds(value):
        return MetricVerdict(
            metric,
            Verdict.PASS,
            classification=Classification.PASS,
            statistic=stat,
            reason=f"{_num(value)} within {_range(bounds)}",
            **common,
        )
    high = bounds.max is not None and value > bounds.max
    return MetricVerdict(
        metric,
        Verdict.FAIL,
        classification=Classification.HIGH if high else Classification.LOW,
        statistic=stat,
        reason=f"{_num(value)} outside {_range(bounds)}",
        **common,
    )


@dataclass(frozen=True)
class LimitReading:
    """One bound of a thresholdRange, as a limit on a share of a window's requests."""

    bound: str  # "min 99", for reasons
    limit: ShareLimit
    events: float
    total: float
    event: str  # what an event is: "5xx", "slower than 250 ms"


def count_check(
    metric: str,
    value: float | None,
    bounds: ThresholdRange,
    readings: Sequence[LimitReading],
    requests: float,
    min_requests: int,
    confidence: float,
    *,
    pooled: int = 1,
    critical: bool = False,
    weight: float = 1.0,
) -> MetricVerdict:
    """A built-in metric's window against its thresholdRange, on the window's counts.

    Fail when the counts show a bound is breached at ``confidence`` (however few the
    requests); else no data below ``min_requests``; else inconclusive while the observed
    value is outside the range; else pass. ``pooled``: how many checks the counts span.
    """
    common = {"value": value, "requests": requests, "critical": critical, "weight": weight}
    stat: dict[str, Any] = {"min": bounds.min, "max": bounds.max, "confidence": confidence}
    if pooled > 1:
        stat["pooled_checks"] = pooled
    judged = [(r, r.limit.judge(r.events, r.total, confidence)) for r in readings]
    for r, _ in judged:
        stat[f"events_vs_{r.bound.split()[0]}"] = _round(r.events, 3)
    failed = [r for r, v in judged if v is ShareVerdict.FAIL]
    pool = f" (pooled over {pooled} checks)" if pooled > 1 else ""
    if failed:
        r = failed[0]
        return MetricVerdict(
            metric,
            Verdict.FAIL,
            classification=Classification.LOW if r.bound.startswith("min") else Classification.HIGH,
            statistic=stat,
            reason=f"{_num(value)} outside {_range(bounds)}: {_events(r)}, shown at "
            f"{_percent(confidence)} confidence{pool}",
            **common,
        )
    if requests < min_requests:
        return MetricVerdict(
            metric,
            Verdict.NO_DATA,
            classification=Classification.NODATA,
            statistic=stat,
            reason=f"{_num(requests)} canary requests, fewer than {min_requests}{pool}",
            **common,
        )
    unsure = [r for r, v in judged if v is ShareVerdict.INCONCLUSIVE]
    if unsure:
        r = unsure[0]
        needed = r.limit.events_to_fail(r.total, confidence)
        shown = "none can fail it" if needed is None else f"it fails {_from(r, needed)}"
        return MetricVerdict(
            metric,
            Verdict.INCONCLUSIVE,
            statistic=stat | {"fails_from": needed},
            reason=f"{_num(value)} outside {_range(bounds)} but not shown at "
            f"{_percent(confidence)} confidence: {_events(r)}; at {_num(r.total)} requests "
            f"{shown}{pool}",
            **common,
        )
    return MetricVerdict(
        metric,
        Verdict.PASS,
        classification=Classification.PASS,
        statistic=stat,
        reason=f"{_num(value)} within {_range(bounds)}",
        **common,
    )


def _events(r: LimitReading) -> str:
    return f"{_num(r.events)} of {_num(r.total)} requests {r.event}"


def _from(r: LimitReading, needed: int) -> str:
    return f"from {needed} {r.event}" if r.limit.at_most else f"at {needed} {r.event} or fewer"


def _percent(share: float) -> str:
    return f"{100 * share:g} %"


def judge_all(verdicts: Sequence[MetricVerdict]) -> JudgeOutcome:
    """Every metric must pass: any fail fails the check, else any no-data makes it no-data,
    else any inconclusive metric makes it inconclusive."""
    metrics = tuple(verdicts)
    failed = [v for v in metrics if v.verdict is Verdict.FAIL]
    final = any(v.final for v in failed)
    if failed:
        return JudgeOutcome(Verdict.FAIL, metrics, _names("failed", failed), final=final)
    missing = [v for v in metrics if v.verdict is Verdict.NO_DATA]
    if missing:
        return JudgeOutcome(Verdict.NO_DATA, metrics, _names("no data for", missing))
    unsure = [v for v in metrics if v.verdict is Verdict.INCONCLUSIVE]
    if unsure:
        return JudgeOutcome(Verdict.INCONCLUSIVE, metrics, _names("inconclusive:", unsure))
    return JudgeOutcome(Verdict.PASS, metrics, "every metric passed")


# --- Mann-Whitney (Kayenta) --------------------------------------------------------------


@dataclass(frozen=True)
class ShiftEstimate:
    """Hodges-Lehmann shift of canary over stable, its confidence interval, and the U test."""

    estimate: float
    low: float
    high: float
    p_value: float
    n_canary: int
    n_stable: int


def hodges_lehmann(
    canary: Sequence[float], stable: Sequence[float], confidence: float, p_value: bool = True
) -> ShiftEstimate:
    """Median of all canary-minus-stable differences, with the distribution-free interval."""
    c = np.asarray(canary, dtype=float)
    s = np.asarray(stable, dtype=float)
    diffs = np.sort(np.subtract.outer(c, s).ravel())
    low, high = shift_interval(diffs, len(c), len(s), confidence)
    p = float(mannwhitneyu(c, s, alternative="two-sided").pvalue) if p_value else math.nan
    return ShiftEstimate(float(np.median(diffs)), low, high, p, len(c), len(s))


def shift_interval(
    sorted_diffs: np.ndarray, m: int, n: int, confidence: float
) -> tuple[float, float]:
    """The interval between the k-th smallest and k-th largest pairwise difference.

    k comes from the normal approximation of the U statistic's distribution; with too few
    samples for any k the interval is unbounded.
    """
    total = m * n
    z = norm.ppf(1 - (1 - confidence) / 2)
    k = math.floor(total / 2 - z * math.sqrt(m * n * (m + n + 1) / 12))
    if k < 1:
        return -math.inf, math.inf
    return float(sorted_diffs[k - 1]), float(sorted_diffs[total - k])


def classify_shift(
    estimate: float, low: float, high: float, direction: Direction, tolerance: float
) -> Classification:
    """Kayenta's rule: High when the whole interval lies above +tolerance x |estimate|, Low
    when below its negative; only the directions in ``direction`` count."""
    margin = tolerance * abs(estimate)
    if direction in ("increase", "either") and low > margin:
        return Classification.HIGH
    if direction in ("decrease", "either") and high < -margin:
        return Classification.LOW
    return Classification.PASS


def comparable(
    canary: Sequence[float], stable: Sequence[float], min_samples: int
) -> Classification | None:
    """Kayenta's short cuts before the test: Nodata, or Pass for identical data."""
    if min(len(canary), len(stable)) < max(min_samples, 1):
        return Classification.NODATA
    if sorted(canary) == sorted(stable) or len(set(canary) | set(stable)) == 1:
        return Classification.PASS
    return None


def mann_whitney_classify(
    canary: Sequence[float],
    stable: Sequence[float],
    direction: Direction,
    confidence: float = 0.98,
    tolerance: float = 0.25,
    min_samples: int = 5,
) -> tuple[Classification, ShiftEstimate | None]:
    """Kayenta's classification of the canary's values against the stable's."""
    early = comparable(canary, stable, min_samples)
    if early is not None:
        return early, None
    shift = hodges_lehmann(canary, stable, confidence)
    return classify_shift(shift.estimate, shift.low, shift.high, direction, tolerance), shift


def mann_whitney_check(
    metric: str,
    canary: Sequence[float],
    stable: Sequence[float],
    direction: Direction,
    *,
    confidence: float = 0.98,
    tolerance: float = 0.25,
    min_samples: int = 5,
    critical: bool = False,
    weight: float = 1.0,
    value: float | None = None,
    requests: float | None = None,
    guard: MetricVerdict | None = None,
) -> MetricVerdict:
    """One metric's comparison; ``guard``, the current window against the metric's
    thresholdRange (if it has one), makes it High or Low when it failed."""
    cls, shift = mann_whitney_classify(
        canary, stable, direction, confidence, tolerance, min_samples
    )
    stat: dict[str, Any] = {"n_canary": len(canary), "n_stable": len(stable)}
    if shift is not None:
        stat |= {
            "hl_estimate": _round(shift.estimate),
            "ci_low": _round(shift.low),
            "ci_high": _round(shift.high),
            "p_value": _round(shift.p_value),
        }
    reason = _mw_reason(cls, shift, len(canary), len(stable), min_samples)
    if guard is not None and guard.verdict is Verdict.FAIL:
        cls = guard.classification or Classification.HIGH
        reason = guard.reason
    verdict = {
        Classification.PASS: Verdict.PASS,
        Classification.NODATA: Verdict.NO_DATA,
    }.get(cls, Verdict.FAIL)
    return MetricVerdict(
        metric,
        verdict,
        value=value,
        stable=_median(stable),
        requests=requests,
        classification=cls,
        statistic=stat,
        reason=reason,
        critical=critical,
        weight=weight,
    )


def judge_score(
    verdicts: Sequence[MetricVerdict], pass_score: float = 95.0, marginal_score: float = 75.0
) -> JudgeOutcome:
    """Kayenta's weighted score: the weight share of Pass among the metrics with data.

    A critical metric that is High or Low fails the check (score 0). No data for half the
    metrics or more, or for a critical one, makes the check no-data (Kayenta would score 0;
    here the plan's noData policy decides). Score >= pass: Pass; >= marginal: Marginal.
    """
    metrics = tuple(verdicts)
    if not metrics:
        return JudgeOutcome(Verdict.PASS, metrics, "no metrics", score=100.0)
    bad_critical = [v for v in metrics if v.critical and v.verdict is Verdict.FAIL]
    if bad_critical:
        return JudgeOutcome(
            Verdict.FAIL, metrics, _names("critical metric failed:", bad_critical), score=0.0
        )
    missing = [v for v in metrics if v.verdict is Verdict.NO_DATA]
    if 2 * len(missing) >= len(metrics) or any(v.critical for v in missing):
        return JudgeOutcome(Verdict.NO_DATA, metrics, _names("no data for", missing), score=0.0)
    judged = [v for v in metrics if v.verdict is not Verdict.NO_DATA]
    passed = sum(v.weight for v in judged if v.verdict is Verdict.PASS)
    score = round(100.0 * passed / sum(v.weight for v in judged), 2)
    bands = f"score {score:g} (pass >= {pass_score:g}, marginal >= {marginal_score:g})"
    if score >= pass_score:
        return JudgeOutcome(Verdict.PASS, metrics, bands, score=score)
    if score >= marginal_score:
        return JudgeOutcome(Verdict.MARGINAL, metrics, bands, score=score)
    return JudgeOutcome(Verdict.FAIL, metrics, bands, score=score)


# --- sequential --------------------------------------------------------------------------


@dataclass(frozen=True)
class Counts:
    """One interval's requests and events (5xx, or slow) for each version."""

    canary_events: float
    canary_total: float
    stable_events: float
    stable_total: float


@dataclass(frozen=True)
class GuardReading:
    """A sequential guard (one bound of a thresholdRange) and this interval's canary counts."""

    test: ShareBoundTest
    bound: str  # "min 99"
    events: float
    total: float
    event: str  # "5xx", "slower than 250 ms"


def sequential_check(
    metric: str,
    test: RateRatioTest,
    counts: Counts,
    min_requests: int = 0,
    *,
    event: str = "5xx",
    guards: Sequence[GuardReading] = (),
    value: float | None = None,
    stable: float | None = None,
    critical: bool = False,
    weight: float = 1.0,
) -> MetricVerdict:
    """Feed one interval to the metric's test and guards; a rejection is final."""
    test.update(
        counts.canary_events, counts.canary_total, counts.stable_events, counts.stable_total
    )
    for g in guards:
        g.test.update(g.events, g.total)
    stat = test.summary()
    for g in guards:
        stat[f"guard {g.bound} log_e_value"] = round(g.test.log_statistic, 3)
    common = {
        "value": _share(counts.canary_events, counts.canary_total) if value is None else value,
        "stable": _share(counts.stable_events, counts.stable_total) if value is None else stable,
        "requests": counts.canary_total,
        "statistic": stat,
        "critical": critical,
        "weight": weight,
    }
    if test.rejected:
        reason = (
            f"sequential test: canary {event} rate above the stable's, log e-value "
            f"{stat['log_e_value']} >= {stat['log_threshold']} (alpha {test.alpha:g})"
        )
        return MetricVerdict(metric, Verdict.FAIL, reason=reason, final=True, **common)
    breached = [g for g in guards if g.test.rejected]
    if breached:
        g = breached[0]
        side = "above" if g.test.at_most else "below"
        reason = (
            f"sequential guard {g.bound}: canary share of requests {g.event} {side} "
            f"{_percent(g.test.limit)}, log e-value {g.test.log_statistic:.3f} >= "
            f"{g.test.log_threshold:.3f} (alpha {g.test.alpha:g})"
        )
        return MetricVerdict(metric, Verdict.FAIL, reason=reason, final=True, **common)
    if counts.canary_total < min_requests:
        reason = (
            f"{_num(counts.canary_total)} canary requests, fewer than {min_requests} "
            "(evidence still accumulates)"
        )
        return MetricVerdict(metric, Verdict.NO_DATA, reason=reason, **common)
    reason = f"no evidence of a higher {event} rate yet (log e-value {stat['log_e_value']})"
    return MetricVerdict(metric, Verdict.PASS, reason=reason, **common)


# --- helpers -----------------------------------------------------------------------------


def _share(events: float, total: float) -> float | None:
    return round(100.0 * events / total, 4) if total and total > 0 else None


def _median(values: Sequence[float]) -> float | None:
    return _round(float(np.median(values))) if len(values) else None


def _mw_reason(
    cls: Classification, shift: ShiftEstimate | None, n_c: int, n_s: int, min_samples: int
) -> str:
    if cls is Classification.NODATA:
        return f"{n_c} canary and {n_s} stable windows, fewer than {min_samples}"
    if shift is None:
        return "canary and stable values are identical"
    return (
        f"{cls.value}: shift {_num(shift.estimate)} in [{_num(shift.low)}, "
        f"{_num(shift.high)}], p={shift.p_value:.3g}"
    )


def _names(prefix: str, verdicts: Iterable[MetricVerdict]) -> str:
    return f"{prefix} " + ", ".join(f"{v.metric} ({v.reason})" for v in verdicts)


def _range(bounds: ThresholdRange) -> str:
    low = "-inf" if bounds.min is None else _num(bounds.min)
    high = "+inf" if bounds.max is None else _num(bounds.max)
    return f"[{low}, {high}]"


def _num(value: float | None) -> str:
    if value is None:
        return "none"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.4g}"


def _round(value: float | None, digits: int = 6) -> float | None:
    """Rounded for logs; an unbounded interval end is None (JSON has no infinity)."""
    if value is None or not math.isfinite(value):
        return None
    return round(value, digits)
