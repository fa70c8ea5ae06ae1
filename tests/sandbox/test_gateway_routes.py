"""HTTPRoutes bound to a Service (the Gateway API in the mesh), routed by the mesh's router."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from sandbox.mesh.routing import MeshRouter, Request
from tests.support.mesh_objects import FakeStore, bookinfo_reviews, service, split_vs

REFERENCE = Path(__file__).resolve().parents[2].parent / "shared" / "reference"
GATEWAY_BOOKINFO = REFERENCE / "gateway-api" / "bookinfo"
VERSIONS = ("v1", "v2", "v3")


def http_route(
    rules: list[dict[str, Any]],
    name: str = "reviews",
    parent: str = "reviews",
    stamp: str = "2024-01-02T00:00:00Z",
) -> dict[str, Any]:
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": name, "namespace": "default", "creationTimestamp": stamp},
        "spec": {"parentRefs": [{"kind": "Service", "name": parent, "port": 9080}], "rules": rules},
    }


def to(*weights: tuple[str, int]) -> list[dict[str, Any]]:
    return [{"name": f"reviews-{v}", "port": 9080, "weight": w} for v, w in weights]


@pytest.fixture
def store() -> FakeStore:
    """BookInfo's reviews with a Service per version, as the Gateway API way needs."""
    store = bookinfo_reviews(FakeStore(), versions=VERSIONS)
    for v in VERSIONS:
        store.put("services", service(f"reviews-{v}", {"app": "reviews", "version": v}))
    return store


def shares(
    store: FakeStore, path: str = "/reviews/0", headers: dict | None = None, method: str = "GET"
) -> dict[str, float]:
    return MeshRouter(store).table().distribution(Request("reviews", path, headers, method=method))


@pytest.mark.parametrize(
    ("sample", "expected"),
    [
        ("route-reviews-v1.yaml", {"reviews-v1": 1.0}),
        ("route-reviews-90-10.yaml", {"reviews-v1": 0.9, "reviews-v2": 0.1}),
    ],
)
def test_istio_bookinfo_samples_route_as_written(
    store: FakeStore, sample: str, expected: dict[str, float]
) -> None:
    versions = yaml.safe_load_all((GATEWAY_BOOKINFO / "bookinfo-versions.yaml").read_text())
    for doc in filter(None, versions):
        store.put("services", doc)
    route = yaml.safe_load((GATEWAY_BOOKINFO / sample).read_text())
    store.put("httproutes", route)
    assert shares(store) == pytest.approx(expected)


def test_the_served_request_names_the_backend_service(store: FakeStore) -> None:
    store.put("httproutes", http_route([{"backendRefs": to(("v2", 1))}]))
    result = MeshRouter(store).route("reviews", "/reviews/0")
    assert (result.status, result.workload) == (None, "reviews-v2")
    assert result.destination_service == "reviews-v2.default.svc.cluster.local"


def test_an_http_route_takes_the_service_from_its_virtual_service(store: FakeStore) -> None:
    store.put("virtualservices", split_vs(0, 100))
    assert shares(store) == {"reviews-v2": 1.0}
    store.put("httproutes", http_route([{"backendRefs": to(("v3", 1))}]))
    assert shares(store) == {"reviews-v3": 1.0}


def test_the_most_specific_match_wins_whatever_the_order(store: FakeStore) -> None:
    jason = {"headers": [{"name": "end-user", "value": "jason"}]}
    store.put(
        "httproutes",
        http_route(
            [
                {"backendRefs": to(("v1", 1))},  # everything, written first
                {
                    "matches": [{"path": {"type": "PathPrefix", "value": "/reviews"}}],
                    "backendRefs": to(("v2", 1)),
                },
                {
                    "matches": [{"path": {"type": "PathPrefix", "value": "/reviews"}, **jason}],
                    "backendRefs": to(("v3", 1)),
                },
                {
                    "matches": [{"path": {"type": "Exact", "value": "/reviews/7"}}],
                    "backendRefs": to(("v1", 1)),
                },
            ]
        ),
    )
    assert shares(store, "/ratings") == {"reviews-v1": 1.0}
    assert shares(store, "/reviews/0") == {"reviews-v2": 1.0}
    assert shares(store, "/reviews/0", {"End-User": "jason"}) == {"reviews-v3": 1.0}
    assert shares(store, "/reviews/7", {"end-user": "jason"}) == {"reviews-v1": 1.0}
    assert shares(store, "/reviewsx") == {"reviews-v1": 1.0}  # whole segments only


@pytest.mark.parametrize(
    ("match", "request_kw", "hits"),
    [
        ({"method": "POST"}, {"method": "POST"}, True),
        ({"method": "POST"}, {"method": "GET"}, False),
        ({"queryParams": [{"name": "u", "value": "jason"}]}, {"path": "/r?u=jason"}, True),
        ({"queryParams": [{"name": "u", "value": "jason"}]}, {"path": "/r?u=ann"}, False),
        (
            {"headers": [{"type": "RegularExpression", "name": "end-user", "value": "ja.*"}]},
            {"headers": {"end-user": "jason"}},
            True,
        ),
        (
            {"headers": [{"type": "RegularExpression", "name": "end-user", "value": "ja"}]},
            {"headers": {"end-user": "jason"}},
            False,
        ),
        ({"path": {"type": "RegularExpression", "value": "/r/[0-9]+"}}, {"path": "/r/12"}, True),
    ],
)
def test_match_conditions(store: FakeStore, match: dict, request_kw: dict, hits: bool) -> None:
    store.put(
        "httproutes",
        http_route(
            [{"matches": [match], "backendRefs": to(("v2", 1))}, {"backendRefs": to(("v1", 1))}]
        ),
    )
    expected = "reviews-v2" if hits else "reviews-v1"
    assert shares(store, **{"path": "/r", **request_kw}) == {expected: 1.0}


def test_ties_go_to_the_oldest_route(store: FakeStore) -> None:
    store.put(
        "httproutes",
        http_route([{"backendRefs": to(("v2", 1))}], name="newer", stamp="2024-01-03T00:00:00Z"),
    )
    store.put(
        "httproutes",
        http_route([{"backendRefs": to(("v3", 1))}], name="older", stamp="2024-01-01T00:00:00Z"),
    )
    assert shares(store) == {"reviews-v3": 1.0}


def test_weights_zero_and_invalid_backends(store: FakeStore) -> None:
    store.put("httproutes", http_route([{"backendRefs": to(("v1", 0), ("v2", 3))}]))
    assert shares(store) == {"reviews-v2": 1.0}
    store.put("httproutes", http_route([{"backendRefs": to(("v1", 0))}]))
    assert shares(store) == {"500": 1.0}
    store.put("httproutes", http_route([{"backendRefs": to(("v1", 1), ("v9", 1))}]))
    assert shares(store) == pytest.approx({"reviews-v1": 0.5, "500": 0.5})


def test_routes_bound_to_a_gateway_are_not_the_meshs(store: FakeStore) -> None:
    route = http_route([{"backendRefs": to(("v3", 1))}])
    route["spec"]["parentRefs"] = [{"name": "ingress-gateway"}]  # kind defaults to Gateway
    store.put("httproutes", route)
    assert shares(store) == pytest.approx({f"reviews-{v}": 1 / 3 for v in VERSIONS})


def test_an_unready_backend_answers_no_healthy_upstream(store: FakeStore) -> None:
    store = bookinfo_reviews(FakeStore(), versions=VERSIONS, ready={"v2": 0})
    store.put("services", service("reviews-v2", {"app": "reviews", "version": "v2"}))
    store.put("httproutes", http_route([{"backendRefs": to(("v2", 1))}]))
    result = MeshRouter(store).route("reviews", "/reviews/0")
    assert (result.status, result.response_flags) == (503, "UH")
