"""A stand-in for Prometheus that answers the Istio templates from a simple model.

Each workload serves ``rps`` requests per second, a share ``errors`` of them 5xx, a share
``slow`` of them slower than any bucket bound asked about, with a fixed p99 and success rate.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from canary.analysis.prometheus import MetricsQueryError, MetricsUnavailable
from canary.durations import parse_duration


@dataclass
class Workload:
    rps: float = 10.0
    errors: float = 0.0
    slow: float = 0.0
    p99: float | None = 50.0


@dataclass
class FakeMesh:
    workloads: dict[str, Workload] = field(default_factory=dict)
    down: bool = False
    refuse: bool = False
    custom: dict[str, float | None] = field(default_factory=dict)  # substring -> value
    queries: list[str] = field(default_factory=list)

    def _workload(self, promql: str) -> Workload:
        name = re.search(r'destination_workload="([^"]+)"', promql)
        return self.workloads.get(name.group(1) if name else "", Workload(rps=0.0))

    def _value(self, promql: str) -> float | None:
        self.queries.append(promql)
        if self.down:
            raise MetricsUnavailable("fake Prometheus is down")
        if self.refuse:
            raise MetricsQueryError("fake Prometheus refused the query")
        for key, value in self.custom.items():
            if key in promql:
                return value
        w = self._workload(promql)
        window = parse_duration(re.search(r"\[([0-9a-z]+)\]", promql).group(1))
        requests = w.rps * window
        if "histogram_quantile" in promql:
            return w.p99 if requests else None
        if "or vector(0)" in promql:
            return 100.0 * (1 - w.errors) if requests else None
        if "_count" in promql:
            return requests * w.slow
        if 'response_code=~"5.*"' in promql:
            return requests * w.errors
        return requests

    def query(self, promql: str, at: float | None = None) -> float | None:
        return self._value(promql)

    def query_vector(self, promql: str, at: float | None = None):
        if "sum by (le)" not in promql:
            value = self._value(promql)
            return [] if value is None else [({}, value)]
        self._value(promql)
        w = self._workload(promql)
        total = w.rps * 600
        bounds = ["25", "50", "100", "250", "+Inf"]
        shares = [0.5, 0.9, 0.995, 0.999, 1.0]
        return [({"le": b}, total * s) for b, s in zip(bounds, shares, strict=True)]

    def query_range(self, promql: str, start: float, end: float, step: float):
        value = self._value(promql)
        if value is None:
            return []
        points = []
        t = start
        while t <= end + 1e-9:
            points.append((t, value))
            t += step
        return points
