"""The provider against a real Prometheus scraping an exporter of Istio's metrics."""

from __future__ import annotations

import itertools
import math
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

from canary.analysis.analyzer import Analyzer, Decision
from canary.analysis.istio_metrics import TEMPLATES
from canary.analysis.judges import Verdict
from canary.analysis.prometheus import MetricsQueryError, MetricsUnavailable, PrometheusProvider
from canary.analysis.readings import Readings
from canary.analysis.sequential import histogram_quantile
from canary.analysis.spec import render, safe_values
from canary.plan import AnalysisSpec
from sandbox.prometheus import PrometheusServer, free_port
from tests.support.prometheus import require_prometheus
from tests.support.waiting import wait_until

NAMESPACE, CANARY, STABLE = "shop", "reviews-v2", "reviews-v1"
BOUNDS = ("25", "50", "100", "250", "500", "+Inf")

# One batch of requests per scrape: (status -> count) and latency counts per bucket.
BATCHES = {
    CANARY: ({"200": 95, "503": 5}, (80, 0, 18, 0, 2, 0)),  # 95 %, p99 = 375 ms
    STABLE: ({"200": 199, "500": 1}, (190, 9, 0, 1, 0, 0)),  # 99.5 %, p99 = 47.2 ms
}
EXPECTED = {
    CANARY: (
        95.0,
        histogram_quantile(
            0.99, [(25, 80), (50, 80), (100, 98), (250, 98), (500, 100), (math.inf, 100)]
        ),
    ),
    STABLE: (
        99.5,
        histogram_quantile(
            0.99, [(25, 190), (50, 199), (100, 199), (250, 200), (500, 200), (math.inf, 200)]
        ),
    ),
}


class IstioBatches:
    """Each scrape adds one batch, so every series grows in the batch's proportions and
    any rate ratio or quantile Prometheus computes is exactly the batch's."""

    def __init__(self) -> None:
        self.batches = 1000  # far from zero: no extrapolation-to-zero effects in rate()
        self.lock = threading.Lock()

    def collect(self) -> Iterator:
        with self.lock:
            self.batches += 1
            n = self.batches
        labels = ["reporter", "destination_workload_namespace", "destination_workload"]
        requests = CounterMetricFamily(
            "istio_requests", "Requests.", labels=[*labels, "response_code"]
        )
        durations = HistogramMetricFamily(
            "istio_request_duration_milliseconds", "Latency.", labels=labels
        )
        for workload, (codes, buckets) in BATCHES.items():
            for namespace, reporter, scale in (
                (NAMESPACE, "destination", 1),
                (NAMESPACE, "source", 7),
                ("other", "destination", 3),
            ):
                for code, count in codes.items():
                    # Other namespaces and source reporters must not leak in: skew them.
                    extra = 0 if scale == 1 else 1000 * (code != "200")
                    requests.add_metric(
                        [reporter, namespace, workload, code], n * count * scale + extra
                    )
                cumulative, total = [], 0
                for bound, count in zip(BOUNDS, buckets, strict=True):
                    total += count * (1 if scale == 1 else 1 + BOUNDS.index(bound))
                    cumulative.append((bound, n * total))
                durations.add_metric([reporter, namespace, workload], cumulative, n * total)
        yield requests
        yield durations


@pytest.fixture(scope="module")
def prometheus() -> Iterator[PrometheusServer]:
    require_prometheus()
    registry = CollectorRegistry()
    registry.register(IstioBatches())
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    try:
        with PrometheusServer([f"127.0.0.1:{port}"], scrape_interval="1s") as prom:
            yield prom
    finally:
        server.shutdown()
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def provider(prometheus: PrometheusServer) -> PrometheusProvider:
    provider = PrometheusProvider(prometheus.url, timeout=5, retries=1)
    # Until ten scrapes fill the 10s window, rate() extrapolates from a partial one.
    promql = query("canary-requests")
    wait_until(
        lambda: (provider.query(promql) or 0) >= 950,
        timeout=60,
        message="a 10s window full of scrapes",
    )
    return provider


def query(name: str, interval: str = "10s") -> str:
    values = {**safe_values(NAMESPACE, "reviews", CANARY, STABLE), "interval": interval}
    return render(TEMPLATES[name], values)


@pytest.mark.parametrize(("workload", "prefix"), [(CANARY, ""), (STABLE, "stable-")])
def test_builtin_metrics_read_what_the_exporter_produced(provider, workload, prefix):
    success, p99 = EXPECTED[workload]
    assert provider.query(query(f"{prefix}request-success-rate")) == pytest.approx(success)
    assert provider.query(query(f"{prefix}request-duration")) == pytest.approx(p99)


def ratio(provider: PrometheusProvider, numerator: str, denominator: str) -> float | None:
    """Both queries at one evaluation time, so their windows are the same."""
    return provider.query(f"({numerator}) / ({denominator})")


def test_counters_give_each_window_whole_counts(provider, prometheus):
    """Windows between any two times hold whole batches: no extrapolation, no fractions."""
    readings = Readings(provider, safe_values(NAMESPACE, "reviews", CANARY, STABLE), True)
    now = prometheus.query_value("time()")
    for workload, role in ((CANARY, "canary"), (STABLE, "stable")):
        codes, buckets = BATCHES[workload]
        window = readings.between(role, now - 7.3, now)
        batches = window.requests / sum(codes.values())
        assert batches == round(batches) and 5 <= batches <= 9, window
        errors = sum(n for code, n in codes.items() if code.startswith("5"))
        assert window.errors == errors * batches
        cumulative = itertools.accumulate(buckets)
        expected = [(float(b), c * batches) for b, c in zip(BOUNDS, cumulative, strict=True)]
        assert list(window.buckets) == expected
        # Windows that meet share their reading: together they are the whole span.
        halves = readings.between(role, now - 7.3, now - 3).plus(
            readings.between(role, now - 3, now)
        )
        assert halves == window


def test_query_range_gives_one_value_per_step(provider, prometheus):
    now = prometheus.query_value("time()")
    points = provider.query_range(query("request-success-rate", "5s"), now - 4, now, 1)
    assert len(points) == 5 and all(v == pytest.approx(95.0) for _, v in points)
    assert [t - points[0][0] for t, _ in points] == [0, 1, 2, 3, 4]


def test_empty_results_are_none(provider):
    assert (
        provider.query('sum(rate(istio_requests_total{destination_workload="nope"}[10s]))') is None
    )
    assert provider.query("vector(0) / 0") is None  # NaN


def test_a_query_prometheus_refuses_is_not_retried(prometheus):
    attempts = []
    p = PrometheusProvider(prometheus.url, retries=3, sleep=attempts.append)
    with pytest.raises(MetricsQueryError):
        p.query("sum(rate(")
    assert attempts == []


def test_the_analyzer_judges_real_metrics(provider):
    spec = AnalysisSpec.model_validate(
        {
            "interval": "10s",
            "threshold": 2,
            "metrics": [
                {"name": "request-success-rate", "thresholdRange": {"min": 99}},
                {"name": "request-duration", "thresholdRange": {"max": 500}},
            ],
        }
    )
    result = Analyzer(spec, provider, NAMESPACE, "reviews", CANARY, STABLE).check()
    assert result.verdict is Verdict.FAIL and result.decision is Decision.HOLD
    rate, duration = result.metrics
    assert rate.value == pytest.approx(95.0) and rate.verdict is Verdict.FAIL
    assert duration.value == pytest.approx(375.0) and duration.verdict is Verdict.PASS


def test_the_sequential_judge_rejects_on_real_counts(provider):
    spec = AnalysisSpec.model_validate(
        {
            "interval": "10s",
            "judge": {"kind": "sequential"},
            "metrics": [{"name": "request-success-rate"}],
        }
    )
    result = Analyzer(spec, provider, NAMESPACE, "reviews", CANARY, STABLE).check()
    assert result.decision is Decision.ROLLBACK, result.reason
    assert result.metrics[0].statistic["canary_events"] > 0


# --- an unreachable Prometheus -------------------------------------------------------------


def test_nothing_listening_raises_unavailable_after_the_retries():
    pauses: list[float] = []
    p = PrometheusProvider(
        f"http://127.0.0.1:{free_port()}", timeout=1, retries=3, sleep=pauses.append
    )
    with pytest.raises(MetricsUnavailable, match="after 4 attempts"):
        p.query("up")
    assert pauses == [0.5, 1.0, 2.0]  # exponential backoff between the four attempts


class _Failing(BaseHTTPRequestHandler):
    hits = 0

    def do_GET(self) -> None:
        type(self).hits += 1
        self.send_response(503)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_server_errors_are_retried_exactly_as_configured():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Failing)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        p = PrometheusProvider(
            f"http://127.0.0.1:{server.server_port}", retries=2, sleep=lambda _: None
        )
        with pytest.raises(MetricsUnavailable, match="503"):
            p.query("up")
        assert _Failing.hits == 3
    finally:
        server.shutdown()
        thread.join(timeout=10)


def test_a_server_that_never_answers_times_out_and_is_unavailable():
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # accepts connections into the backlog, never answers
        p = PrometheusProvider(
            f"http://127.0.0.1:{silent.getsockname()[1]}",
            timeout=0.3,
            retries=1,
            sleep=lambda _: None,
        )
        with pytest.raises(MetricsUnavailable, match="Timeout"):
            p.query("up")
