"""Counts of requests and what a window's counts can show: Clopper-Pearson bounds, limits
on a share of requests, and the histogram read as counts of slow requests."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import binom

from canary.analysis.counts import (
    ShareLimit,
    ShareVerdict,
    WorkloadCounts,
    lower_bound,
    upper_bound,
)
from canary.analysis.sequential import histogram_quantile

DOCS = Path(__file__).resolve().parents[2] / "docs" / "judgement.md"


@pytest.mark.parametrize(("events", "total"), [(1, 20), (3, 50), (7, 100), (40, 1000)])
@pytest.mark.parametrize("confidence", [0.9, 0.98])
def test_the_bounds_are_clopper_pearsons(events, total, confidence):
    # The lower bound is the share at which this many events or more happen 1 - c of the
    # time; the upper one, where this many or fewer do.
    low, high = lower_bound(events, total, confidence), upper_bound(events, total, confidence)
    assert binom.sf(events - 1, total, low) == pytest.approx(1 - confidence, rel=1e-6)
    assert binom.cdf(events, total, high) == pytest.approx(1 - confidence, rel=1e-6)
    assert low < events / total < high


def test_bounds_at_the_edges_and_on_arrays():
    assert lower_bound(0, 50, 0.98) == 0.0 and upper_bound(50, 50, 0.98) == 1.0
    both = lower_bound(np.array([0, 3]), np.array([50, 50]), 0.98)
    assert both[0] == 0.0 and both[1] == lower_bound(3, 50, 0.98)


def test_a_floor_at_its_limit_fails_a_window_at_most_one_minus_confidence_of_the_time():
    rng = np.random.default_rng(5)
    floor = ShareLimit(0.01)  # success rate at least 99 %
    for n in (20, 60, 500):
        errors = rng.binomial(n, 0.01, 20_000)
        failed = np.mean([floor.judge(x, n, 0.95) is ShareVerdict.FAIL for x in errors])
        assert failed <= 0.05, (n, failed)


@pytest.mark.parametrize("n", [20, 50, 60, 100, 333, 1000])
@pytest.mark.parametrize("at_most", [True, False])
def test_events_to_fail_is_the_first_count_that_fails(n, at_most):
    limit = ShareLimit(0.01 if at_most else 0.2, at_most)
    k = limit.events_to_fail(n, 0.98)
    assert k is not None
    assert limit.judge(k, n, 0.98) is ShareVerdict.FAIL
    step = -1 if at_most else 1  # one event fewer (at most) or more (at least) does not
    assert limit.judge(k + step, n, 0.98) is not ShareVerdict.FAIL


def test_too_few_requests_can_fail_nothing():
    assert ShareLimit(0.9).events_to_fail(1, 0.98) is None  # even 1 of 1 shows nothing
    assert ShareLimit(0.01).judge(0, 0, 0.98) is ShareVerdict.INCONCLUSIVE


def test_the_documented_table_is_what_the_judge_does():
    """docs/judgement.md: "with N requests in a window, a floor of 99 % fails from K 5xx"."""
    rows = re.findall(r"^\| (\d+) \| (\d+) \| (\d+) \| (\d+) \|$", DOCS.read_text(), re.M)
    assert len(rows) >= 5
    for n, at_98, at_95, at_90 in rows:
        for documented, confidence in ((at_98, 0.98), (at_95, 0.95), (at_90, 0.9)):
            assert ShareLimit(0.01).events_to_fail(int(n), confidence) == int(documented)


BOUNDS = (25.0, 50.0, 100.0, 250.0, math.inf)


def test_counts_from_series_deltas_and_resets():
    by_code = [({"response_code": "200"}, 90.0), ({"response_code": "503"}, 7.0),
               ({"response_code": "500"}, 3.0), ({"response_code": "404"}, 1.0)]  # fmt: skip
    by_le = [({"le": "+Inf"}, 101.0), ({"le": "25"}, 50.0), ({"le": "oops"}, 1.0)]
    counts = WorkloadCounts.from_series(by_code, by_le)
    assert (counts.requests, counts.errors) == (101.0, 10.0)
    assert counts.buckets == ((25.0, 50.0), (math.inf, 101.0))
    later = WorkloadCounts(150.0, 12.0, ((25.0, 80.0), (math.inf, 150.0)))
    window = later.minus(counts)
    assert window == WorkloadCounts(49.0, 2.0, ((25.0, 30.0), (math.inf, 49.0)))
    assert counts.minus(later) is None  # a counter went down: a reset
    assert window.plus(counts) == later


def test_slow_requests_are_read_as_histogram_quantile_reads_the_histogram():
    rng = np.random.default_rng(2)
    for _ in range(200):
        per_bucket = rng.integers(0, 50, len(BOUNDS))
        counts = WorkloadCounts(
            float(per_bucket.sum()),
            0.0,
            tuple(zip(BOUNDS, np.cumsum(per_bucket).astype(float).tolist(), strict=True)),
        )
        p99 = histogram_quantile(0.99, list(counts.buckets))
        ceiling = float(rng.uniform(1, 240))
        if p99 is None or abs(p99 - ceiling) < 1e-6:
            continue
        # "p99 above the ceiling" and "more than 1 % slower than it" say the same.
        assert (p99 > ceiling) == (counts.slower_than(ceiling) > 0.01 * counts.observed)
    whole = WorkloadCounts(10.0, 0.0, ((25.0, 5.0), (50.0, 8.0), (100.0, 9.0), (math.inf, 10.0)))
    assert whole.slower_than(50) == 2.0
    assert whole.slower_than_bucket(60, at_most=True) == (100.0, 1.0)  # never overstated
    assert whole.slower_than_bucket(60, at_most=False) == (50.0, 2.0)
    assert whole.quantile(0.5) == pytest.approx(25.0)
