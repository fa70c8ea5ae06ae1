"""Istio's counters of the canary and the stable workload, read at chosen times and kept.

Each reading is the counters' sums at one evaluation time: by response code (requests and
5xx) and, when a latency metric is judged, by histogram bucket. A window's counts are the
difference of the readings at its two ends, and a reading is taken once per time, so the
windows of consecutive checks meet exactly (see counts.py).
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping

from canary.analysis.counts import WorkloadCounts
from canary.analysis.istio_metrics import TEMPLATES
from canary.analysis.prometheus import MetricsProvider
from canary.analysis.spec import render, safe_window

ROLES = ("canary", "stable")


class Readings:
    """Counter readings per role ("canary", "stable") and time, from one provider."""

    def __init__(self, provider: MetricsProvider, names: Mapping[str, str], buckets: bool):
        self.provider = provider
        self._names = dict(names)
        self._buckets = buckets
        self._kept: dict[tuple[str, float], WorkloadCounts] = {}
        self._times: list[float] = []  # sorted: every time a canary reading was taken

    def at(self, role: str, time: float) -> WorkloadCounts:
        """The counters' sums at ``time`` (the last scrape before it); read once."""
        key = (role, time)
        if key not in self._kept:
            by_code = self._vector(f"{role}-counters-by-code", time)
            by_le = self._vector(f"{role}-counters-by-le", time) if self._buckets else []
            self._kept[key] = WorkloadCounts.from_series(by_code, by_le)
            if role == ROLES[0]:
                bisect.insort(self._times, time)
        return self._kept[key]

    def between(self, role: str, start: float, end: float) -> WorkloadCounts:
        """The counts of the window (start, end]; ``increase()`` if a counter was reset."""
        counts = self.at(role, end).minus(self.at(role, start))
        if counts is not None:
            return counts
        window = {"interval": safe_window(max(1.0, end - start))}
        by_code = self._vector(f"{role}-increase-by-code", end, window)
        by_le = self._vector(f"{role}-increase-by-le", end, window) if self._buckets else []
        return WorkloadCounts.from_series(by_code, by_le).rounded()

    def nearest(self, time: float, before: float) -> float | None:
        """The reading time closest to ``time`` among those earlier than ``before``."""
        end = bisect.bisect_left(self._times, before)
        at = bisect.bisect_left(self._times, time, 0, end)
        around = self._times[max(0, at - 1) : min(at + 1, end)]
        return min(around, key=lambda t: abs(t - time), default=None)

    def forget_before(self, time: float) -> None:
        """Drop readings older than ``time``: no window will start there again."""
        self._kept = {k: v for k, v in self._kept.items() if k[1] >= time}
        self._times = self._times[bisect.bisect_left(self._times, time) :]

    def _vector(
        self, name: str, at: float, extra: Mapping[str, str] | None = None
    ) -> list[tuple[dict[str, str], float]]:
        promql = render(TEMPLATES[name], {**self._names, **(extra or {})})
        return self.provider.query_vector(promql, at)
