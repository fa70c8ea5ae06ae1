"""A stand-in for Prometheus that answers the analyzer's queries from a simple model.

Each workload serves ``rps`` requests per second from time 0, a share ``errors`` of them
5xx, with latencies spread over Istio's buckets as ``latency`` says (cumulative shares by
bucket bound). ``FakeMesh.change`` changes a workload's behaviour from a moment on, so its
counters grow as a real workload's would. Counters are what Prometheus returns at a time;
``reset_at`` makes a workload's start again from zero then (a restarted pod).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field

from canary.analysis.prometheus import MetricsQueryError, MetricsUnavailable
from canary.durations import parse_duration

BOUNDS = ("25", "50", "100", "250", "500", "+Inf")
FAST = (0.5, 0.9, 0.995, 0.999, 1.0, 1.0)  # p99 = 50 + 50 * 0.09 / 0.095 ms


def slowed(share: float) -> tuple[float, ...]:
    """FAST with ``share`` of the requests moved to between 250 and 500 ms."""
    return tuple(
        min(c, 1 - share) if float(b) <= 250 else c for b, c in zip(BOUNDS, FAST, strict=True)
    )


@dataclass
class Workload:
    rps: float = 10.0
    errors: float = 0.0
    latency: tuple[float, ...] = FAST
    reset_at: float | None = None
    changes: list[tuple[float, Workload]] = field(default_factory=list, repr=False)

    def pieces(self, at: float, counter: bool = True) -> list[tuple[float, Workload]]:
        """(seconds served, behaviour) up to ``at``: since the start, or since the reset
        for the ``counter`` (what the counter shows, not what was served)."""
        reset = counter and self.reset_at is not None and at >= self.reset_at
        begin = self.reset_at if reset else 0.0
        marks = [(0.0, self), *self.changes]
        out = []
        for (since, state), (until, _) in zip(marks, [*marks[1:], (at, None)], strict=True):
            served = min(until, at) - max(since, begin)
            if served > 0:
                out.append((served, state))
        return out

    def counts(self, at: float, counter: bool = True) -> tuple[float, float, list[float]]:
        """Cumulative requests, 5xx and bucket counts at ``at``."""
        requests = errors = 0.0
        buckets = [0.0] * len(BOUNDS)
        for served, state in self.pieces(at, counter):
            n = state.rps * served
            requests += n
            errors += n * state.errors
            buckets = [b + n * share for b, share in zip(buckets, state.latency, strict=True)]
        return requests, errors, buckets


@dataclass
class FakeMesh:
    workloads: dict[str, Workload] = field(default_factory=dict)
    down: bool = False
    refuse: bool = False
    custom: dict[str, float | None] = field(default_factory=dict)  # substring -> value
    queries: list[tuple[str, float | None]] = field(default_factory=list)

    def change(self, name: str, at: float, **fields: object) -> None:
        """From ``at`` on, the workload behaves with these fields changed."""
        workload = self.workloads[name]
        latest = workload.changes[-1][1] if workload.changes else workload
        changed = dataclasses.replace(latest, changes=[], reset_at=None, **fields)
        workload.changes.append((at, changed))

    def promql(self) -> list[str]:
        return [q for q, _ in self.queries]

    def _workload(self, promql: str) -> Workload:
        name = re.search(r'destination_workload="([^"]+)"', promql)
        return self.workloads.get(name.group(1) if name else "", Workload(rps=0.0))

    def _seen(self, promql: str, at: float | None) -> None:
        self.queries.append((promql, at))
        if self.down:
            raise MetricsUnavailable("fake Prometheus is down")
        if self.refuse:
            raise MetricsQueryError("fake Prometheus refused the query")

    def _counts(self, promql: str, at: float) -> tuple[float, float, list[float]]:
        """What the query counts: the counter, or what was served over its [window]
        (increase() sees through resets)."""
        w = self._workload(promql)
        window = re.search(r"\[([0-9a-z]+)\]", promql)
        if window is None or "last_over_time" in promql:
            return w.counts(at)
        now = w.counts(at, counter=False)
        then = w.counts(at - parse_duration(window.group(1)), counter=False)
        return (
            now[0] - then[0],
            now[1] - then[1],
            [a - b for a, b in zip(now[2], then[2], strict=True)],
        )

    def query(self, promql: str, at: float | None = None) -> float | None:
        self._seen(promql, at)
        for key, value in self.custom.items():
            if key in promql:
                return value
        return self._counts(promql, at or 0.0)[0]

    def query_vector(self, promql: str, at: float | None = None):
        self._seen(promql, at)
        requests, errors, buckets = self._counts(promql, at or 0.0)
        if not requests:
            return []
        if "sum by (le)" in promql:
            return [({"le": b}, c) for b, c in zip(BOUNDS, buckets, strict=True)]
        return [({"response_code": "200"}, requests - errors), ({"response_code": "503"}, errors)]

    def query_range(self, promql: str, start: float, end: float, step: float):
        points = []
        t = start
        while t <= end + 1e-9:
            value = self.query(promql, t)
            if value is not None:
                points.append((t, value))
            t += step
        return points
