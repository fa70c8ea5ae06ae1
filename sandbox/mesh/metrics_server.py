"""Istio's metrics endpoint for the simulated mesh, and debug views of it, over HTTP.

``MetricsServer(simulator)`` answers, on 127.0.0.1:

* ``/metrics`` and Envoy's ``/stats/prometheus``: the Istio metrics in Prometheus text;
* ``/debug/split?window=2[&service=reviews]``: the share of recent requests per outcome;
* ``/debug/routing``: the routing table and the split each kind of request should see;
* ``/debug/readiness``: when each workload turned ready, on this host's monotonic clock;
* ``/healthz``.
"""

from __future__ import annotations

import json
from typing import Protocol
from urllib.parse import parse_qs, urlsplit

from sandbox.http_server import HttpServer, RequestHandler
from sandbox.mesh.istio_metrics import CONTENT_TYPE
from sandbox.mesh.simulator import TrafficSimulator

METRICS_PATHS = ("/metrics", "/stats/prometheus")


class MetricsFaults(Protocol):
    """A metrics outage (``sandbox.chaos.Chaos`` is one)."""

    def metrics_down(self) -> bool:
        """Whether ``/metrics`` answers 503 now."""
        ...


class MetricsServer:
    def __init__(
        self, simulator: TrafficSimulator, port: int = 0, chaos: MetricsFaults | None = None
    ) -> None:
        self.simulator = simulator
        self._http = HttpServer(_handler(simulator, chaos), port=port, name="mesh-metrics")

    @property
    def url(self) -> str:
        return f"{self._http.url}/metrics"

    @property
    def address(self) -> str:
        """host:port, as a Prometheus scrape target."""
        host, port = self._http.address
        return f"{host}:{port}"

    def start(self) -> MetricsServer:
        self._http.start()
        return self

    def stop(self) -> None:
        self._http.stop()

    def __enter__(self) -> MetricsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _handler(simulator: TrafficSimulator, chaos: MetricsFaults | None) -> type[RequestHandler]:
    class Handler(RequestHandler):
        def do_GET(self) -> None:
            url = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(url.query).items()}
            if url.path in METRICS_PATHS:
                if chaos is not None and chaos.metrics_down():
                    self.send_body(503, b"metrics unavailable (chaos)\n", "text/plain")
                    return
                self.send_body(200, simulator.metrics_text(), CONTENT_TYPE)
            elif url.path == "/debug/split":
                try:
                    window = float(query.get("window", "2"))
                except ValueError:
                    self.send_body(400, b"window must be a number of seconds\n", "text/plain")
                    return
                split = simulator.split(window, query.get("service"))
                self.send_body(200, json.dumps(split).encode(), "application/json")
            elif url.path == "/debug/routing":
                body = json.dumps(simulator.sample_routing(), default=str).encode()
                self.send_body(200, body, "application/json")
            elif url.path == "/debug/readiness":
                body = json.dumps(simulator.router.readiness_history()).encode()
                self.send_body(200, body, "application/json")
            elif url.path == "/healthz":
                self.send_body(200, b"ok", "text/plain")
            else:
                self.send_body(404, b"not found\n", "text/plain")

    return Handler
