"""A real Prometheus scraping the sandbox sees the VirtualService's 80/20 split.

The canary (reviews-v2), the DestinationRule and the 80/20 VirtualService are created
through the official kubernetes client, as the pipeline does; Prometheus scrapes the
sandbox's ``metrics_url`` every second.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from kubernetes import client, config

from sandbox import bookinfo
from sandbox.emulated import Sandbox
from sandbox.prometheus import PrometheusServer
from tests.support.mesh_objects import destination_rule, split_vs
from tests.support.prometheus import require_prometheus
from tests.support.waiting import wait_until

RPS = 100
WINDOW_S = 30
V2_SHARE = (
    f'sum(increase(istio_requests_total{{reporter="destination",'
    f'destination_workload="reviews-v2"}}[{WINDOW_S}s]))'
    f' / sum(increase(istio_requests_total{{reporter="destination"}}[{WINDOW_S}s]))'
)
TOTAL_RATE = f'sum(rate(istio_requests_total{{reporter="destination"}}[{WINDOW_S}s]))'
ISTIO = ("networking.istio.io", "v1", "default")


def apply_canary(sandbox: Sandbox, kubeconfig: Path) -> None:
    """reviews-v2, the reviews DestinationRule and the 80/20 VirtualService, via the API."""
    api = config.new_client_from_config(config_file=str(sandbox.write_kubeconfig(kubeconfig)))
    client.AppsV1Api(api).create_namespaced_deployment(
        "default", bookinfo.deployment("reviews", "default", "v2")
    )
    custom = client.CustomObjectsApi(api)
    subsets = {v: {"version": v} for v in ("v1", "v2")}
    for plural, body in (
        ("destinationrules", destination_rule("reviews", subsets)),
        ("virtualservices", split_vs(80, 20)),
    ):
        custom.create_namespaced_custom_object(*ISTIO, plural, body)
    api.close()


@pytest.mark.timeout(180)
def test_prometheus_measures_the_80_20_split_over_30_seconds(tmp_path: Path) -> None:
    require_prometheus()
    with (
        Sandbox("healthy", rps=RPS, seed=2024, startup_delay_s=0.1) as sandbox,
        PrometheusServer([sandbox.metrics_url], scrape_interval="1s") as prom,
    ):
        apply_canary(sandbox, tmp_path / "kubeconfig")
        wait_until(
            lambda: sandbox.simulator.split(0.5).get("reviews-v2", 0) > 0.1,
            timeout=10,
            message="reviews-v2 to receive traffic",
        )
        routed_at = time.time()
        # Wait until Prometheus holds a full window scraped after the split took effect.
        last = prom.wait_for_value(
            'max(timestamp(up{job="sandbox"}))',
            lambda t: t >= routed_at + WINDOW_S + 1,
            timeout=90,
            what=f"{WINDOW_S}s of data after the split took effect",
        )
        share = prom.query_value(V2_SHARE, at=last)
        rate = prom.query_value(TOTAL_RATE, at=last)
    assert share is not None and share == pytest.approx(0.20, abs=0.03), share
    assert rate is not None and rate == pytest.approx(RPS, rel=0.15), rate
