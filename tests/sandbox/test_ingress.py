"""The mesh ingress: real HTTP requests routed like a sidecar routes them."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from prometheus_client.parser import text_string_to_metric_families

from sandbox.mesh.ingress import IngressServer
from sandbox.mesh.istio_metrics import IstioMetrics
from tests.support.mesh_objects import FakeStore, bookinfo_reviews, header_vs, service, split_vs


def get(
    url: str, host: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers={"Host": host, **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, dict(response.headers.items()), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers.items()), error.read()


@pytest.fixture
def store() -> FakeStore:
    return bookinfo_reviews(FakeStore(), versions=("v1", "v2", "v3"))


@pytest.fixture
def ingress(store: FakeStore) -> Iterator[IngressServer]:
    server = IngressServer(store, "healthy", metrics=IstioMetrics(), seed=3)
    server.start()
    yield server
    server.stop()


def test_header_route_sends_jason_to_v2_and_everyone_else_to_v1(
    store: FakeStore, ingress: IngressServer
) -> None:
    store.put("virtualservices", header_vs())
    url = f"{ingress.url}/reviews/0"

    def served_by(jason: bool) -> str:
        status, headers, _ = get(url, "reviews:9080", {"end-user": "jason"} if jason else {})
        return f"{status} {headers.get('x-served-by')}"

    with ThreadPoolExecutor(max_workers=8) as pool:
        jason = Counter(pool.map(served_by, [True] * 50))
        others = Counter(pool.map(served_by, [False] * 50))
    # The healthy baseline fails 0.1% of requests; a 5xx still names who served it.
    assert {k.split()[1] for k in jason} == {"reviews-v2"}
    assert {k.split()[1] for k in others} == {"reviews-v1"}


@pytest.mark.parametrize(
    "host", ["reviews", "reviews.default", "reviews.default.svc.cluster.local:9080"]
)
def test_body_names_the_workload_and_has_ratings_from_v2(
    store: FakeStore, ingress: IngressServer, host: str
) -> None:
    store.put("virtualservices", split_vs(0, 100))
    status, headers, body = get(f"{ingress.url}/reviews/7", host)
    data = json.loads(body)
    assert headers["x-served-by"] == "reviews-v2"
    if status == 200:  # the baseline's rare 5xx carries no reviews
        assert (data["id"], data["workload"], data["version"]) == ("7", "reviews-v2", "v2")
        assert data["podname"].startswith("reviews-v2-")
        assert all("rating" in r for r in data["reviews"])


def test_v1_has_no_ratings_and_path_names_service_without_host(
    ingress: IngressServer, store: FakeStore
) -> None:
    store.put("virtualservices", split_vs(100, 0))
    host = ingress.url.removeprefix("http://")
    status, _, body = get(f"{ingress.url}/reviews/0", host)
    data = json.loads(body)
    assert data["workload"] == "reviews-v1"
    if status == 200:
        assert all("rating" not in r for r in data["reviews"])


def test_unready_subset_answers_no_healthy_upstream(
    store: FakeStore, ingress: IngressServer
) -> None:
    store.put("virtualservices", split_vs(0, 100))
    store.put("deployments", {**store.get("deployments", "default", "reviews-v2"), "status": {}})
    status, headers, body = get(f"{ingress.url}/reviews/0", "reviews")
    assert (status, body) == (503, b"no healthy upstream")
    assert "x-served-by" not in headers
    families = text_string_to_metric_families(ingress.metrics.render().decode())
    uh = [
        s
        for f in families
        for s in f.samples
        if s.name == "istio_requests_total" and s.labels["response_flags"] == "UH"
    ]
    assert [(s.labels["reporter"], s.labels["source_workload"], s.value) for s in uh] == [
        ("source", "istio-ingressgateway", 1.0)
    ]


def test_unknown_host_and_unmatched_route_answer_404(
    store: FakeStore, ingress: IngressServer
) -> None:
    assert get(f"{ingress.url}/x", "nosuchservice")[0] == 404
    store.put(
        "virtualservices",
        {
            **header_vs(),
            "spec": {
                "hosts": ["reviews"],
                "http": [
                    {
                        "match": [{"uri": {"prefix": "/only"}}],
                        "route": [{"destination": {"host": "reviews", "subset": "v1"}}],
                    }
                ],
            },
        },
    )
    assert get(f"{ingress.url}/reviews/0", "reviews")[0] == 404


def test_requests_are_recorded_in_the_shared_metrics(
    store: FakeStore, ingress: IngressServer
) -> None:
    for _ in range(5):
        get(f"{ingress.url}/reviews/0", "reviews")
    families = text_string_to_metric_families(ingress.metrics.render().decode())
    total = [s for f in families for s in f.samples if s.name == "istio_requests_total"]
    assert sum(s.value for s in total if s.labels["reporter"] == "destination") == 5
    assert sum(s.value for s in total if s.labels["reporter"] == "source") == 5


def test_a_workload_reached_through_its_version_service_answers_as_its_app(
    store: FakeStore, ingress: IngressServer
) -> None:
    # The Gateway API way: an HTTPRoute on reviews sends to the Service reviews-v2.
    store.put("services", service("reviews-v2", {"app": "reviews", "version": "v2"}))
    store.put(
        "httproutes",
        {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute",
            "metadata": {"name": "reviews", "namespace": "default"},
            "spec": {
                "parentRefs": [{"kind": "Service", "name": "reviews", "port": 9080}],
                "rules": [{"backendRefs": [{"name": "reviews-v2", "port": 9080}]}],
            },
        },
    )
    status, headers, body = get(f"{ingress.url}/reviews/0", "reviews:9080")
    answer = json.loads(body)
    assert (status, headers.get("x-served-by")) == (200, "reviews-v2")
    assert answer["version"] == "v2" and len(answer["reviews"]) == 2  # BookInfo's shape
    assert "service" not in answer
