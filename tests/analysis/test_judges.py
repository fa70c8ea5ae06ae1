"""The judges on synthetic data with fixed seeds: no Prometheus involved."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binomtest

from canary.analysis.judges import (
    Classification,
    Counts,
    MetricVerdict,
    Verdict,
    hodges_lehmann,
    judge_all,
    judge_score,
    mann_whitney_check,
    mann_whitney_classify,
    sequential_check,
    threshold_check,
)
from canary.analysis.sequential import (
    RateRatioTest,
    ShareBoundTest,
    histogram_quantile,
    interval_log_lr,
    log_ratio_grid,
    slow_bound,
)
from canary.analysis.spec import ThresholdRange

# --- threshold (Flagger) -----------------------------------------------------------------


def test_threshold_pass_and_fail_match_flagger_bounds():
    rng = ThresholdRange(min=99)
    assert threshold_check("sr", 99.0, rng).verdict is Verdict.PASS  # bounds are inclusive
    failed = threshold_check("sr", 98.9, rng)
    assert failed.verdict is Verdict.FAIL and failed.classification is Classification.LOW
    high = threshold_check("p99", 501, ThresholdRange(max=500))
    assert high.verdict is Verdict.FAIL and high.classification is Classification.HIGH


def test_threshold_no_value_or_little_traffic_is_no_data_not_a_pass():
    # Flagger fails a check whose query is empty; here it is no-data and the plan's
    # noData.onNoData says what that means (fail reproduces Flagger).
    rng = ThresholdRange(min=99)
    assert threshold_check("sr", None, rng).verdict is Verdict.NO_DATA
    few = threshold_check("sr", 100.0, rng, requests=19, min_requests=20)
    assert few.verdict is Verdict.NO_DATA and "fewer than 20" in few.reason


def test_judge_all_fail_beats_no_data_beats_pass():
    ok = MetricVerdict("a", Verdict.PASS)
    gap = MetricVerdict("b", Verdict.NO_DATA)
    bad = MetricVerdict("c", Verdict.FAIL)
    assert judge_all([ok]).verdict is Verdict.PASS
    assert judge_all([ok, gap]).verdict is Verdict.NO_DATA
    assert judge_all([ok, gap, bad]).verdict is Verdict.FAIL


# --- Mann-Whitney (Kayenta) --------------------------------------------------------------


def test_hodges_lehmann_estimate_and_interval():
    rng = np.random.default_rng(1)
    stable = rng.normal(100, 5, 40)
    canary = rng.normal(110, 5, 40)
    shift = hodges_lehmann(canary, stable, 0.98)
    assert 7 < shift.estimate < 13 and shift.low < shift.estimate < shift.high
    assert shift.low > 5 and shift.p_value < 1e-6
    # A wider confidence gives a wider interval around the same estimate.
    wider = hodges_lehmann(canary, stable, 0.999)
    assert wider.low < shift.low and wider.high > shift.high


def test_hodges_lehmann_on_a_pure_shift_is_exact():
    stable = np.arange(10.0)
    shift = hodges_lehmann(stable + 3, stable, 0.95)
    assert shift.estimate == 3.0


@pytest.mark.parametrize(
    ("delta", "direction", "expected"),
    [
        (10, "increase", Classification.HIGH),
        (10, "either", Classification.HIGH),
        (10, "decrease", Classification.PASS),  # only decreases count for this metric
        (-10, "decrease", Classification.LOW),
        (-10, "increase", Classification.PASS),
        (0, "either", Classification.PASS),
    ],
)
def test_mann_whitney_classes_follow_direction(delta, direction, expected):
    rng = np.random.default_rng(7)
    stable = rng.normal(100, 5, 30)
    canary = rng.normal(100 + delta, 5, 30)
    cls, _ = mann_whitney_classify(canary, stable, direction)
    assert cls is expected


def test_mann_whitney_nodata_and_identical_data():
    assert mann_whitney_classify([1.0] * 4, [1.0] * 10, "either")[0] is Classification.NODATA
    same = [1.0, 2.0, 3.0, 4.0, 5.0]
    assert mann_whitney_classify(same, same[::-1], "either") == (Classification.PASS, None)


def test_mann_whitney_false_alarms_at_one_look_are_about_one_minus_confidence():
    rng = np.random.default_rng(3)
    alarms = sum(
        mann_whitney_classify(rng.normal(0, 1, 20), rng.normal(0, 1, 20), "either")[0]
        is not Classification.PASS
        for _ in range(1000)
    )
    assert alarms / 1000 <= 0.02 + 0.015


def test_mann_whitney_check_reports_its_statistic():
    rng = np.random.default_rng(5)
    v = mann_whitney_check("p99", rng.normal(120, 5, 20), rng.normal(100, 5, 20), "increase")
    assert v.verdict is Verdict.FAIL and v.classification is Classification.HIGH
    assert {"hl_estimate", "ci_low", "ci_high", "p_value"} <= set(v.statistic)
    breached = threshold_check("p99", 900, ThresholdRange(max=500))
    guard = mann_whitney_check(
        "p99", [100.0] * 6, [100.0] * 6, "increase", value=900, guard=breached
    )
    assert guard.verdict is Verdict.FAIL and guard.classification is Classification.HIGH
    assert guard.reason == breached.reason


def _mv(name, cls, weight=1.0, critical=False):
    verdict = {Classification.PASS: Verdict.PASS, Classification.NODATA: Verdict.NO_DATA}
    return MetricVerdict(
        name, verdict.get(cls, Verdict.FAIL), classification=cls, weight=weight, critical=critical
    )


def test_kayenta_score_bands_and_weights():
    p, h = Classification.PASS, Classification.HIGH
    assert judge_score([_mv("a", p), _mv("b", p)]).verdict is Verdict.PASS
    marginal = judge_score([_mv("a", p, 4), _mv("b", h, 1)])
    assert marginal.score == 80.0 and marginal.verdict is Verdict.MARGINAL
    failed = judge_score([_mv("a", p), _mv("b", h)])
    assert failed.score == 50.0 and failed.verdict is Verdict.FAIL


def test_kayenta_score_critical_and_nodata_rules():
    p, h, n = Classification.PASS, Classification.HIGH, Classification.NODATA
    critical = judge_score([_mv("a", p, 99), _mv("b", h, 1, critical=True)])
    assert critical.score == 0.0 and critical.verdict is Verdict.FAIL
    half = judge_score([_mv("a", p), _mv("b", n)])
    assert half.verdict is Verdict.NO_DATA and half.score == 0.0
    few = judge_score([_mv("a", p), _mv("b", p), _mv("c", n)])
    assert few.verdict is Verdict.PASS and few.score == 100.0  # Nodata leaves the ratio
    assert (
        judge_score([_mv("a", p), _mv("b", p), _mv("c", n, critical=True)]).verdict
        is Verdict.NO_DATA
    )


# --- sequential ---------------------------------------------------------------------------


def _null_stream_alarm(rng, alpha, looks, naive=False):
    """One healthy release: equal error rates, varying traffic and canary weight."""
    test = RateRatioTest(alpha)
    canary_events = canary_total = stable_events = stable_total = 0
    for look in range(looks):
        weight = (0.05, 0.1, 0.25, 0.5)[min(3, look // 25)]
        total = rng.poisson(400 * rng.gamma(4, 0.25))  # bursty traffic
        n = rng.binomial(total, weight)
        p = 0.01 * rng.gamma(0.5, 2.0)  # errors come and go, for both versions alike
        x, y = rng.binomial(n, p), rng.binomial(total - n, p)
        if not naive:
            if test.update(x, n, y, total - n):
                return True
            continue
        # A fixed-sample binomial test repeated at every look: what anytime-validity avoids.
        canary_events, canary_total = canary_events + x, canary_total + n
        stable_events, stable_total = stable_events + y, stable_total + total - n
        events = canary_events + stable_events
        share = canary_total / (canary_total + stable_total)
        if events and binomtest(canary_events, events, share, "greater").pvalue < alpha:
            return True
    return False


@pytest.mark.parametrize("alpha", [0.05, 0.01])
def test_sequential_false_alarms_stay_below_alpha_however_often_it_looks(alpha):
    rng = np.random.default_rng(20240501)
    streams, looks = 2000, 100
    alarms = sum(_null_stream_alarm(rng, alpha, looks) for _ in range(streams))
    slack = 3 * math.sqrt(alpha * (1 - alpha) / streams)
    assert alarms / streams <= alpha + slack, alarms


def test_repeated_fixed_sample_tests_do_inflate_false_alarms():
    rng = np.random.default_rng(11)
    alarms = sum(_null_stream_alarm(rng, 0.05, 100, naive=True) for _ in range(300))
    assert alarms / 300 > 0.1  # the reason for a sequential test


def test_sequential_never_rejects_a_better_canary():
    rng = np.random.default_rng(2)
    alarms = 0
    for _ in range(300):
        test = RateRatioTest(0.01)
        for _ in range(60):
            n, m = rng.poisson(50), rng.poisson(450)
            test.update(rng.binomial(n, 0.001), n, rng.binomial(m, 0.01), m)
        alarms += test.rejected
    assert alarms == 0


def test_sequential_detects_one_error_point_at_ten_percent_traffic():
    rng = np.random.default_rng(4)
    looks_needed = []
    for _ in range(200):
        test = RateRatioTest(0.01)
        for look in range(1, 61):  # ten minutes of 10 s looks, canary 5 rps of 50
            n, m = rng.poisson(50), rng.poisson(450)
            if test.update(rng.binomial(n, 0.011), n, rng.binomial(m, 0.001), m):
                looks_needed.append(look)
                break
    assert len(looks_needed) >= 198
    assert np.median(looks_needed) <= 15


def test_sequential_rejection_is_final_and_explained():
    test = RateRatioTest(0.01)
    verdict = sequential_check("sr", test, Counts(30, 100, 10, 900))
    assert verdict.verdict is Verdict.FAIL and verdict.final
    assert verdict.statistic["rejected"] and "log e-value" in verdict.reason
    after = sequential_check("sr", test, Counts(0, 100, 30, 900))
    assert after.verdict is Verdict.FAIL and after.final


def test_sequential_low_traffic_is_no_data_while_evidence_accumulates():
    test = RateRatioTest(0.01)
    verdict = sequential_check("sr", test, Counts(0, 3, 1, 300), min_requests=20)
    assert verdict.verdict is Verdict.NO_DATA and test.canary_total == 3


def test_the_mixture_is_a_likelihood_ratio_with_mean_one_under_the_null():
    # E[L(r)] = 1 for Binomial(E, rho) canary counts, for every r: the martingale property.
    log_r = log_ratio_grid(1.5, 16)
    events, rho = 12, 0.2
    from scipy.stats import binom

    expectation = sum(
        binom.pmf(x, events, rho) * np.exp(interval_log_lr(log_r, x, events, rho))
        for x in range(events + 1)
    )
    assert np.allclose(expectation, 1.0)


def test_histogram_quantile_matches_prometheus():
    buckets = [(25, 80), (50, 80), (100, 98), (250, 98), (500, 100), (math.inf, 100)]
    assert histogram_quantile(0.99, buckets) == pytest.approx(375.0)
    assert histogram_quantile(0.5, buckets) == pytest.approx(25 * 50 / 80)
    assert histogram_quantile(0.99, [(10, 0), (math.inf, 0)]) is None
    assert histogram_quantile(0.99, [(10, 1), (math.inf, 10)]) == 10  # +Inf: highest bound
    assert slow_bound(buckets, 60) == 100 and slow_bound(buckets, 600) is None


# --- sequential guards and what a hold's traffic can show -----------------------------------


@pytest.mark.parametrize("at_most", [True, False])
def test_a_guard_at_its_limit_alarms_at_most_alpha_however_often_it_looks(at_most):
    rng = np.random.default_rng(8)
    alpha, limit, streams = 0.05, 0.01 if at_most else 0.99, 500
    alarms = 0
    for _ in range(streams):
        test = ShareBoundTest(alpha, limit, at_most)
        for _ in range(100):  # every share exactly at the limit: the hardest healthy case
            n = rng.poisson(rng.gamma(4, 25))
            if test.update(rng.binomial(n, limit), n):
                alarms += 1
                break
    assert alarms / streams <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / streams), alarms


def test_a_guard_catches_a_clear_breach_and_a_floor_of_100_percent_is_exact():
    test = ShareBoundTest(0.0025, 0.01)
    looks = next(k for k in range(1, 100) if test.update(5, 100))  # 5 % against at most 1 %
    assert looks <= 3 and test.summary()["rejected"]
    none_at_all = ShareBoundTest(0.0025, 0.0)  # a floor of 100 %: one 5xx proves it broken
    assert not none_at_all.update(0, 1000) and none_at_all.update(1, 1000)


def test_requests_to_see_is_about_what_detects_half_the_time():
    rng = np.random.default_rng(9)
    quiet = RateRatioTest(0.005)
    for _ in range(20):
        quiet.update(0, 10, 1, 90)  # stable at about 1.1 %, canary share 10 %
    needed = quiet.requests_to_see(1.0)
    assert needed is not None and needed > quiet.canary_total
    # A canary one point worse than the stable, served `needed` requests in the same split:
    looks = math.ceil(needed / 10)
    detected = 0
    for _ in range(200):
        test = RateRatioTest(0.005)
        for _ in range(looks):
            detected_now = test.update(rng.binomial(10, 0.021), 10, rng.binomial(90, 0.011), 90)
        detected += detected_now
    assert 0.25 <= detected / 200 <= 0.85, detected
    busy = RateRatioTest(0.005)
    for _ in range(20):
        busy.update(1, 1000, 10, 9000)
    assert busy.requests_to_see(1.0) is None  # 20 000 canary requests would have shown it
