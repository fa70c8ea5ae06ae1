"""The throwaway Prometheus itself: several targets, chaos controls, clean-up."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, Counter, start_http_server

from sandbox.prometheus import PrometheusError, PrometheusServer
from tests.support.prometheus import require_prometheus

SCRAPES = 'sum(count_over_time(up{job="sandbox"}[5m]))'


@pytest.fixture
def exporter_ports() -> Iterator[tuple[int, int]]:
    """Two exporters: targets on one address would share their `up` series."""
    registry = CollectorRegistry()
    Counter("things", "Things.", registry=registry).inc()
    servers = [start_http_server(0, addr="127.0.0.1", registry=registry) for _ in range(2)]
    yield servers[0][0].server_port, servers[1][0].server_port
    for server, thread in servers:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.mark.timeout(120)
def test_it_scrapes_every_target_survives_chaos_and_leaves_nothing(
    exporter_ports: tuple[int, int],
) -> None:
    require_prometheus()
    plain, by_url = exporter_ports
    targets = [f"127.0.0.1:{plain}", f"http://127.0.0.1:{by_url}/stats/prometheus"]
    with PrometheusServer(targets) as prom:
        storage = prom.directory
        assert prom.query_value('count(up{job="sandbox"} == 1)') == 2  # both scraped already

        prom.pause()  # hangs: the ready probe times out rather than being refused
        with pytest.raises(TimeoutError):
            urllib.request.urlopen(f"{prom.url}/-/ready", timeout=0.5)
        prom.resume()
        assert prom.query_value("vector(1)") == 1

        port, scrapes = prom.port, prom.query_value(SCRAPES)
        prom.terminate()  # down: connections are refused
        with pytest.raises(urllib.error.URLError):
            prom.query_value("vector(1)")
        with pytest.raises(PrometheusError):
            prom.pause()
        prom.restart()
        assert prom.port == port
        assert (prom.query_value(SCRAPES) or 0) >= (scrapes or 0) > 0  # samples kept
    assert storage is not None and not storage.exists()
