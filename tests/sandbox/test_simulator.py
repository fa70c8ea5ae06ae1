"""The traffic simulator and the Istio metrics it produces."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections import Counter

import pytest
from prometheus_client.parser import text_string_to_metric_families

from sandbox.mesh.istio_metrics import CONTENT_TYPE, DURATION_BUCKETS_MS
from sandbox.mesh.metrics_server import MetricsServer
from sandbox.mesh.scenarios import BUILTIN_SCENARIOS, Scenario, VersionBehaviour
from sandbox.mesh.simulator import TrafficSimulator, source_identity
from tests.support.mesh_objects import (
    FakeStore,
    bookinfo_reviews,
    deployment,
    header_vs,
    service,
    split_vs,
)
from tests.support.waiting import wait_until


def samples(sim: TrafficSimulator, name: str = "istio_requests_total") -> list:
    families = text_string_to_metric_families(sim.metrics_text().decode())
    return [s for f in families for s in f.samples if s.name == name]


def requests_by(sim: TrafficSimulator, *labels: str, **where: str) -> Counter:
    out: Counter = Counter()
    for s in samples(sim):
        if all(s.labels.get(k) == v for k, v in where.items()):
            out[tuple(s.labels[k] for k in labels)] += s.value
    return out


def simulator(store: FakeStore, scenario: Scenario | str = "healthy", **kw) -> TrafficSimulator:
    return TrafficSimulator(store, scenario, seed=kw.pop("seed", 42), **kw)


def test_split_converges_on_the_virtual_service_weights() -> None:
    store = bookinfo_reviews(FakeStore())
    store.put("virtualservices", split_vs(80, 20))
    sim = simulator(store)
    sim.send(5000)
    assert sim.split(window_s=60) == pytest.approx({"reviews-v1": 0.8, "reviews-v2": 0.2}, abs=0.02)
    assert sim.sample_routing()["expected"]["reviews"]["default"] == pytest.approx(
        {"reviews-v1": 0.8, "reviews-v2": 0.2}
    )


def test_jason_share_follows_the_header_route() -> None:
    store = bookinfo_reviews(FakeStore())
    store.put("virtualservices", header_vs())
    sim = simulator(store, jason_share=0.25)
    sim.send(4000)
    assert sim.split(window_s=60)["reviews-v2"] == pytest.approx(0.25, abs=0.02)


def test_unready_subset_is_reported_as_503_uh_by_the_source_only() -> None:
    store = bookinfo_reviews(FakeStore(), ready={"v2": 0})
    store.put("virtualservices", split_vs(80, 20))
    sim = simulator(store)
    sim.send(2000)
    assert sim.split(window_s=60)["503"] == pytest.approx(0.2, abs=0.03)
    uh = requests_by(
        sim,
        "reporter",
        "destination_workload",
        "destination_version",
        response_flags="UH",
        response_code="503",
    )
    assert set(uh) == {("source", "unknown", "unknown")}
    assert uh[("source", "unknown", "unknown")] == pytest.approx(0.2 * 2000, rel=0.15)
    assert requests_by(sim, "reporter", response_flags="UH", reporter="destination") == {}


def test_routed_requests_are_reported_by_both_reporters() -> None:
    store = bookinfo_reviews(FakeStore())
    store.put("virtualservices", split_vs(50, 50))
    sim = simulator(store)
    sim.send(1000)
    by_reporter = requests_by(sim, "reporter", "destination_workload")
    for workload in ("reviews-v1", "reviews-v2"):
        assert by_reporter[("source", workload)] == by_reporter[("destination", workload)] > 0
    assert sum(by_reporter.values()) == 2000
    s = next(x for x in samples(sim) if x.labels["reporter"] == "destination")
    assert s.labels["destination_service"] == "reviews.default.svc.cluster.local"
    assert s.labels["destination_service_name"] == "reviews"
    assert s.labels["destination_service_namespace"] == "default"
    assert s.labels["destination_workload_namespace"] == "default"
    assert s.labels["destination_app"] == "reviews"
    assert s.labels["source_workload"] == "productpage-v1"
    assert s.labels["source_workload_namespace"] == "default"
    assert s.labels["request_protocol"] == "http"
    assert s.labels["response_flags"] == "-"


def test_duration_histogram_uses_istio_buckets() -> None:
    store = bookinfo_reviews(FakeStore())
    sim = simulator(store)
    sim.send(500)
    buckets = samples(sim, "istio_request_duration_milliseconds_bucket")
    bounds = sorted({float(s.labels["le"]) for s in buckets})
    assert bounds == sorted([*map(float, DURATION_BUCKETS_MS), float("inf")])
    counts = samples(sim, "istio_request_duration_milliseconds_count")
    assert sum(s.value for s in counts) == sum(s.value for s in samples(sim))


def test_faulty_version_errors_show_in_the_metrics() -> None:
    store = bookinfo_reviews(FakeStore())
    store.put("virtualservices", split_vs(50, 50))
    sim = simulator(store, BUILTIN_SCENARIOS["faulty"])
    sim.send(4000)
    codes = requests_by(sim, "destination_workload", "response_code", reporter="destination")
    v2_errors = sum(n for (w, c), n in codes.items() if w == "reviews-v2" and c[0] == "5")
    v2_total = sum(n for (w, _), n in codes.items() if w == "reviews-v2")
    assert v2_errors / v2_total == pytest.approx(0.10, abs=0.02)


def test_timed_fault_begins_after_the_version_has_been_ready_a_while() -> None:
    store = bookinfo_reviews(FakeStore())
    store.put("virtualservices", split_vs(0, 100))
    late = Scenario("late", VersionBehaviour(), {"v2": VersionBehaviour(1.0, after_s=0.3)})
    sim = simulator(store, late)
    sim.send(200)
    assert requests_by(sim, "response_code", reporter="destination") == {("200",): 200}
    wait_until(lambda: sim.router.ready_for("default", "reviews-v2") >= 0.3, timeout=30)
    sim.send(200)
    codes = requests_by(sim, "response_code", reporter="destination")
    assert codes[("200",)] == 200 and codes[("500",)] + codes[("503",)] == 200


def test_several_services_at_once() -> None:
    store = bookinfo_reviews(FakeStore())
    store.put("services", service("ratings"))
    store.put("deployments", deployment("ratings-v1", {"app": "ratings", "version": "v1"}))
    sim = simulator(store, service=["reviews", "ratings"])
    sim.send(100)
    assert sim.split(60, service="ratings") == {"ratings-v1": 1.0}
    assert set(sim.split(60, service="reviews")) == {"reviews-v1", "reviews-v2"}
    assert sum(requests_by(sim, "destination_service_name", reporter="source").values()) == 200


def test_source_identity() -> None:
    src = source_identity("productpage-v1", "default")
    assert (src.app, src.version) == ("productpage", "v1")
    assert source_identity("loadgen", "ns").version == "unknown"


def test_background_thread_paces_requests_and_follows_route_changes() -> None:
    store = bookinfo_reviews(FakeStore())
    store.put("virtualservices", split_vs(100, 0))
    sim = simulator(store, rps=200)
    cpu0, t0 = time.process_time(), time.monotonic()
    with sim:
        wait_until(lambda: sim.sent >= 200, timeout=30, message="200 requests")
        elapsed = time.monotonic() - t0
        # Paced on the clock: a second's worth takes at least about a second, never a burst.
        assert elapsed >= 0.8
        store.put("virtualservices", split_vs(0, 100))
        wait_until(
            lambda: sim.split(window_s=0.2).get("reviews-v2") == 1.0,
            timeout=30,
            message="the new route to take effect",
        )
        wait_until(lambda: sim.sent >= 400, timeout=30, message="400 requests")
        cpu, wall = time.process_time() - cpu0, time.monotonic() - t0
    assert not sim._thread
    assert cpu < 0.5 * wall, f"{cpu:.2f}s CPU for {wall:.2f}s of 200 rps"


def test_metrics_are_served_over_http() -> None:
    sim = simulator(bookinfo_reviews(FakeStore()))
    sim.send(10)
    with MetricsServer(sim) as server:
        with urllib.request.urlopen(server.url, timeout=5) as response:
            assert response.headers["Content-Type"] == CONTENT_TYPE
            assert response.read() == sim.metrics_text()
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(server.url.replace("/metrics", "/other"), timeout=5)
        caught.value.close()  # the error holds the answer's connection
        assert caught.value.code == 404


def test_a_label_set_is_exposed_once_across_route_changes() -> None:
    store = bookinfo_reviews(FakeStore())
    sim = simulator(store)
    sim.send(200)  # no VirtualService: the Service balances, no subset
    store.put("virtualservices", split_vs(50, 50))
    sim.send(200)  # now through subsets v1 and v2: the same workloads, the same labels
    keys = [(s.name, tuple(sorted(s.labels.items()))) for s in samples(sim)]
    assert len(keys) == len(set(keys))
    assert sum(s.value for s in samples(sim)) == 800
