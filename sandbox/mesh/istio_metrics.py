"""Istio's standard request metrics for emulated traffic, in Prometheus text format.

Every request is counted in ``istio_requests_total`` and observed in
``istio_request_duration_milliseconds`` (Istio's default buckets), with Istio's standard
labels. As with real sidecars, a request that reached a workload is reported twice, by
``reporter="source"`` (the caller's proxy) and ``reporter="destination"`` (the workload's
proxy); a request the caller's proxy answered itself (503 ``UH`` no healthy upstream,
``NC`` cluster not found, 404 ``NR`` no route) never reached a destination proxy and is
reported by the source only, with ``destination_workload``/``destination_version``/
``destination_app`` set to ``unknown``.

The exposition is written by hand: requests are aggregated per label set with one dict
update, so recording costs about a microsecond and rendering scales with series, not
requests.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Iterable
from dataclasses import dataclass, replace

from sandbox.mesh.routing import UNKNOWN, RouteResult

DURATION_BUCKETS_MS: tuple[float, ...] = (
    0.5,
    1,
    5,
    10,
    25,
    50,
    100,
    250,
    500,
    1000,
    2500,
    5000,
    10000,
    30000,
    60000,
    300000,
    600000,
    1800000,
    3600000,
)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
CLUSTER = "Kubernetes"  # Istio's default cluster id


@dataclass(frozen=True, slots=True)
class Source:
    """The calling workload, as its sidecar labels the requests it sends."""

    workload: str = "productpage-v1"
    namespace: str = "default"
    app: str = "productpage"
    version: str = "v1"


_Key = tuple[Source, RouteResult, int]


class _Histogram:
    __slots__ = ("buckets", "count", "total")

    def __init__(self) -> None:
        self.buckets = [0] * (len(DURATION_BUCKETS_MS) + 1)  # last one: above every bound
        self.count = 0
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.buckets[bisect.bisect_left(DURATION_BUCKETS_MS, value)] += 1
        self.count += 1
        self.total += value


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _bound(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


_BOUNDS = [*(_bound(b) for b in DURATION_BUCKETS_MS), "+Inf"]


def _principal(namespace: str, app: str) -> str:
    return f"spiffe://cluster.local/ns/{namespace}/sa/{app}"


def istio_labels(reporter: str, source: Source, result: RouteResult, status: int) -> dict[str, str]:
    """The standard Istio label set of one request as one reporter sees it."""
    reached = result.status is None
    dest_ns = (result.workload_namespace or UNKNOWN) if reached else UNKNOWN
    dest_app = (result.app or UNKNOWN) if reached else UNKNOWN
    return {
        "reporter": reporter,
        "source_workload": source.workload,
        "source_workload_namespace": source.namespace,
        "source_principal": _principal(source.namespace, source.app),
        "source_app": source.app,
        "source_version": source.version,
        "source_canonical_service": source.app,
        "source_canonical_revision": source.version,
        "source_cluster": CLUSTER,
        "destination_workload": (result.workload or UNKNOWN) if reached else UNKNOWN,
        "destination_workload_namespace": dest_ns,
        "destination_principal": _principal(dest_ns, dest_app) if reached else UNKNOWN,
        "destination_app": dest_app,
        "destination_version": (result.version or UNKNOWN) if reached else UNKNOWN,
        "destination_service": result.destination_service,
        "destination_service_name": result.destination_service_name or UNKNOWN,
        "destination_service_namespace": result.destination_service_namespace or UNKNOWN,
        "destination_canonical_service": dest_app,
        "destination_canonical_revision": (result.version or "latest") if reached else UNKNOWN,
        "destination_cluster": CLUSTER if reached else UNKNOWN,
        "request_protocol": "http",
        "response_code": str(status),
        "grpc_response_status": "",
        "response_flags": result.response_flags,
        "connection_security_policy": "mutual_tls" if reporter == "destination" else "unknown",
    }


def _labelled(result: RouteResult) -> RouteResult:
    """The result without what no label shows, so one label set is one series.

    Results that differ only by subset or reason (e.g. before and after a VirtualService
    names the subset) would otherwise be exposed as duplicate series.
    """
    return replace(result, subset=None, reason="")


def _label_text(labels: dict[str, str]) -> str:
    return ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())


class IstioMetrics:
    """Thread-safe aggregation of emulated requests into Istio's metrics."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[_Key, _Histogram] = {}
        self._labels: dict[tuple[str, _Key], str] = {}
        self._series_of: dict[RouteResult, RouteResult] = {}

    def record(self, source: Source, result: RouteResult, status: int, latency_ms: float) -> None:
        """One request: ``status`` is what the caller got (the mesh's or the workload's)."""
        self.record_many([(source, result, status, latency_ms)])

    def record_many(self, requests: Iterable[tuple[Source, RouteResult, int, float]]) -> None:
        with self._lock:
            counts, series_of = self._counts, self._series_of
            for source, result, status, latency in requests:
                labelled = series_of.get(result)
                if labelled is None:
                    labelled = series_of[result] = _labelled(result)
                key = (source, labelled, status)
                hist = counts.get(key)
                if hist is None:
                    hist = counts[key] = _Histogram()
                hist.observe(latency)

    def _series(self) -> list[tuple[str, _Histogram]]:
        """(label text, histogram copy) for every reporter of every label set."""
        with self._lock:
            items = [(key, self._copy(h)) for key, h in self._counts.items()]
        series = []
        for key, hist in items:
            source, result, status = key
            reporters = ("source", "destination") if result.status is None else ("source",)
            for reporter in reporters:
                text = self._labels.get((reporter, key))
                if text is None:
                    text = _label_text(istio_labels(reporter, source, result, status))
                    self._labels[(reporter, key)] = text
                series.append((text, hist))
        return series

    @staticmethod
    def _copy(hist: _Histogram) -> _Histogram:
        copy = _Histogram()
        copy.buckets, copy.count, copy.total = list(hist.buckets), hist.count, hist.total
        return copy

    def render(self) -> bytes:
        """The Prometheus text exposition of both metrics."""
        series = self._series()
        out = [
            "# HELP istio_requests_total Total requests handled by an Istio proxy.",
            "# TYPE istio_requests_total counter",
        ]
        out += [f"istio_requests_total{{{labels}}} {h.count}" for labels, h in series]
        out += [
            "# HELP istio_request_duration_milliseconds Duration of requests, in milliseconds.",
            "# TYPE istio_request_duration_milliseconds histogram",
        ]
        name = "istio_request_duration_milliseconds"
        for labels, h in series:
            running = 0
            for bound, n in zip(_BOUNDS, h.buckets, strict=True):
                running += n
                out.append(f'{name}_bucket{{{labels},le="{bound}"}} {running}')
            out.append(f"{name}_sum{{{labels}}} {h.total!r}")
            out.append(f"{name}_count{{{labels}}} {h.count}")
        return ("\n".join(out) + "\n").encode()
