"""Request counts of one workload, and what a window's counts can show about a bound.

Judging reads Istio's counters as they are, summed over the workload's series, at the two
ends of a window (the last scrape before each end), and takes the difference. Windows
that meet at a check time share that reading, so consecutive windows tile the counts
exactly: whole numbers of requests, nothing counted twice or missed, and no extrapolation
to the window's edges (``increase()`` and ``rate()`` scale the sampled increase up to the
window, which turns one error into 1.1 and tips a floor). A counter that went down between
the two readings (a pod restarted) leaves that window to ``increase()``, rounded.

A bound of a thresholdRange becomes a limit on a share of requests: a success-rate floor
of 99 % says at most 1 % of requests are 5xx; a p99 ceiling of 250 ms says at most 1 % are
slower than 250 ms. A window fails a limit only when the one-sided Clopper-Pearson bound
at the plan's confidence is past it (the counts show it), passes when the observed share
is within it, and is otherwise inconclusive.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np
from scipy.stats import beta

from canary.analysis.sequential import histogram_quantile

Buckets = tuple[tuple[float, float], ...]  # (upper bound in ms, cumulative count), sorted


@dataclass(frozen=True)
class WorkloadCounts:
    """Requests, 5xx and the latency histogram of one workload: cumulative, or a window's."""

    requests: float = 0.0
    errors: float = 0.0
    buckets: Buckets = ()

    @classmethod
    def from_series(
        cls,
        by_code: Iterable[tuple[Mapping[str, str], float]],
        by_bound: Iterable[tuple[Mapping[str, str], float]] = (),
    ) -> WorkloadCounts:
        """From ``sum by (response_code)`` requests and ``sum by (le)`` bucket series."""
        codes = list(by_code)
        errors = sum(v for labels, v in codes if labels.get("response_code", "").startswith("5"))
        buckets = []
        for labels, value in by_bound:
            try:
                buckets.append((float(labels.get("le", "")), value))
            except ValueError:
                continue
        return cls(sum(v for _, v in codes), errors, tuple(sorted(buckets)))

    def minus(self, earlier: WorkloadCounts) -> WorkloadCounts | None:
        """The counts between two readings; None when a counter went down (a reset)."""
        before = dict(earlier.buckets)
        buckets = tuple((b, c - before.get(b, 0.0)) for b, c in self.buckets)
        counts = WorkloadCounts(
            self.requests - earlier.requests, self.errors - earlier.errors, buckets
        )
        values = (counts.requests, counts.errors, *(c for _, c in buckets))
        return counts if min(values, default=0.0) >= 0 else None

    def plus(self, other: WorkloadCounts) -> WorkloadCounts:
        mine, theirs = dict(self.buckets), dict(other.buckets)
        bounds = sorted(set(mine) | set(theirs))
        buckets = tuple((b, mine.get(b, 0.0) + theirs.get(b, 0.0)) for b in bounds)
        return WorkloadCounts(self.requests + other.requests, self.errors + other.errors, buckets)

    def rounded(self) -> WorkloadCounts:
        buckets = tuple((b, float(max(0, round(c)))) for b, c in self.buckets)
        return WorkloadCounts(
            float(max(0, round(self.requests))), float(max(0, round(self.errors))), buckets
        )

    # --- what the counts say --------------------------------------------------------

    @property
    def observed(self) -> float:
        """Requests in the latency histogram (its +Inf bucket)."""
        return self.buckets[-1][1] if self.buckets and math.isinf(self.buckets[-1][0]) else 0.0

    @property
    def success_rate(self) -> float | None:
        """Percent of requests that were not 5xx; None without requests."""
        if self.requests <= 0:
            return None
        return 100.0 * (self.requests - self.errors) / self.requests

    def quantile(self, q: float) -> float | None:
        return histogram_quantile(q, list(self.buckets))

    def slower_than(self, bound_ms: float) -> float:
        """Requests above ``bound_ms``, spread evenly inside its bucket as histogram_quantile
        assumes (exact when ``bound_ms`` is a bucket bound)."""
        lower_bound, lower_count = 0.0, 0.0
        for bound, count in self.buckets:
            if bound >= bound_ms:
                if math.isinf(bound):
                    return self.observed - lower_count
                inside = (count - lower_count) * (bound - bound_ms) / (bound - lower_bound)
                return self.observed - count + inside
            lower_bound, lower_count = bound, count
        return 0.0

    def slower_than_bucket(self, bound_ms: float, at_most: bool) -> tuple[float, float]:
        """(bucket bound, requests above it) for the bound next to ``bound_ms``: at or above
        it for a limit of at most a share (fewer slow requests: never a false breach), at or
        below it for a limit of at least a share. Whole counts, for the sequential guards."""
        finite = [b for b, _ in self.buckets if math.isfinite(b)]
        if at_most:
            bound = next((b for b in finite if b >= bound_ms), math.inf)
        else:
            bound = next((b for b in reversed(finite) if b <= bound_ms), 0.0)
        if math.isinf(bound):
            return bound, 0.0
        if bound == 0.0:
            return bound, self.observed
        cumulative = dict(self.buckets)[bound]
        return bound, self.observed - cumulative


# --- a bound on a share of requests ----------------------------------------------------


class ShareVerdict(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    INCONCLUSIVE = "inconclusive"


@dataclass(frozen=True)
class ShareLimit:
    """The share of requests that are events (5xx, or slow) is at most, or at least, ``limit``."""

    limit: float
    at_most: bool = True

    def judge(self, events: float, total: float, confidence: float) -> ShareVerdict:
        if total <= 0:
            return ShareVerdict.INCONCLUSIVE
        share = events / total
        if (share <= self.limit) if self.at_most else (share >= self.limit):
            return ShareVerdict.PASS
        if self.at_most:
            shown = lower_bound(events, total, confidence) > self.limit
        else:
            shown = upper_bound(events, total, confidence) < self.limit
        return ShareVerdict.FAIL if shown else ShareVerdict.INCONCLUSIVE

    def events_to_fail(self, total: float, confidence: float) -> int | None:
        """The fewest events (at most: the most) in ``total`` requests that fail the limit
        at ``confidence``; None when no count can."""
        n = math.floor(total)
        if n <= 0:
            return None
        if self.at_most:
            if lower_bound(n, n, confidence) <= self.limit:
                return None
            low, high = math.floor(self.limit * n), n  # fails at high, not at low
            while high - low > 1:
                mid = (low + high) // 2
                low, high = (
                    (low, mid) if lower_bound(mid, n, confidence) > self.limit else (mid, high)
                )
            return high
        if upper_bound(0, n, confidence) >= self.limit:
            return None
        low, high = 0, math.ceil(self.limit * n)  # fails at low, not at high
        while high - low > 1:
            mid = (low + high) // 2
            low, high = (mid, high) if upper_bound(mid, n, confidence) < self.limit else (low, mid)
        return low


def lower_bound(events: Any, total: Any, confidence: float) -> Any:
    """One-sided Clopper-Pearson lower confidence bound on the event share (numbers or
    numpy arrays of them)."""
    x, n = np.asarray(events, dtype=float), np.asarray(total, dtype=float)
    with np.errstate(invalid="ignore"):
        bound = np.where(x > 0, beta.ppf(1.0 - confidence, np.maximum(x, 1e-300), n - x + 1.0), 0.0)
    return float(bound) if bound.ndim == 0 else bound


def upper_bound(events: float, total: float, confidence: float) -> float:
    """One-sided Clopper-Pearson upper confidence bound on the event share."""
    if events >= total:
        return 1.0
    return float(beta.ppf(confidence, events + 1.0, total - events))
