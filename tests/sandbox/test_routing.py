"""Istio sidecar routing as the sandbox emulates it, over a fake store."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import yaml

from sandbox.mesh.routing import MeshRouter, Request, parse_host
from tests.support.mesh_objects import (
    FakeStore,
    bookinfo_reviews,
    deployment,
    dest,
    destination_rule,
    header_vs,
    service,
    split_vs,
    virtual_service,
)

REFERENCE = Path(__file__).resolve().parents[2].parent / "shared" / "reference"
BOOKINFO = REFERENCE / "istio" / "bookinfo"


@pytest.fixture
def store() -> FakeStore:
    return bookinfo_reviews(FakeStore(), versions=("v1", "v2", "v3"))


def route_with(
    store: FakeStore,
    http: list[dict],
    host: str = "reviews",
    path: str = "/",
    headers: dict[str, str] | None = None,
):
    store.put("virtualservices", virtual_service(["reviews"], http))
    return MeshRouter(store).route(host, path, headers)


def shares(
    store: FakeStore, host: str = "reviews", path: str = "/", headers: dict[str, str] | None = None
) -> dict[str, float]:
    return MeshRouter(store).table().distribution(Request(host, path, headers))


@pytest.mark.parametrize(
    "host",
    [
        "reviews",
        "reviews.default",
        "reviews.default.svc",
        "reviews.default.svc.cluster.local",
        "reviews:9080",
        "reviews.default.svc.cluster.local:9080",
        "Reviews.Default",
    ],
)
def test_every_host_form_names_the_service(store: FakeStore, host: str) -> None:
    store.put(
        "virtualservices",
        virtual_service(["reviews.default.svc.cluster.local"], [{"route": [dest("v3")]}]),
    )
    result = MeshRouter(store).route(host)
    assert (result.status, result.workload, result.version) == (None, "reviews-v3", "v3")
    assert result.destination_service == "reviews.default.svc.cluster.local"


def test_parse_host_rejects_external_names() -> None:
    assert parse_host("www.example.com", "default") is None
    assert parse_host("reviews.other.svc.cluster.local", "default") == ("other", "reviews")


def test_first_matching_route_wins(store: FakeStore) -> None:
    http = [
        {"match": [{"uri": {"prefix": "/reviews"}}], "route": [dest("v2")]},
        {"match": [{"uri": {"prefix": "/"}}], "route": [dest("v3")]},
        {"route": [dest("v1")]},
    ]
    assert route_with(store, http, path="/reviews/0").workload == "reviews-v2"
    assert route_with(store, http, path="/ratings").workload == "reviews-v3"


@pytest.mark.parametrize(
    ("spec", "value", "matches"),
    [
        ({"exact": "jason"}, "jason", True),
        ({"exact": "jason"}, "jason2", False),
        ({"exact": "jason"}, None, False),
        ({"prefix": "ja"}, "jason", True),
        ({"prefix": "ja"}, "bob", False),
        ({"regex": "ja.*"}, "jason", True),
        ({"regex": "jas"}, "jason", False),  # the regex must match the whole value
        ({"regex": "(jason|bob)"}, "bob", True),
        ({}, "anything", True),  # an empty match only asks for presence
        ({}, None, False),
    ],
)
def test_header_string_matches(
    store: FakeStore, spec: dict, value: str | None, matches: bool
) -> None:
    http = [
        {"match": [{"headers": {"End-User": spec}}], "route": [dest("v2")]},
        {"route": [dest("v1")]},
    ]
    headers = {} if value is None else {"end-user": value}
    assert route_with(store, http, headers=headers).workload == (
        "reviews-v2" if matches else "reviews-v1"
    )


def test_header_names_are_case_insensitive(store: FakeStore) -> None:
    store.put("virtualservices", header_vs())
    router = MeshRouter(store)
    assert router.route("reviews", headers={"END-USER": "jason"}).workload == "reviews-v2"
    assert router.route("reviews", headers={"end-user": "JASON"}).workload == "reviews-v1"


@pytest.mark.parametrize(
    ("spec", "path", "matches"),
    [
        ({"exact": "/reviews/0"}, "/reviews/0", True),
        ({"exact": "/reviews/0"}, "/reviews/0?x=1", True),  # the query is not part of the path
        ({"exact": "/reviews/0"}, "/reviews/00", False),
        ({"prefix": "/reviews"}, "/reviews/7", True),
        ({"prefix": "/reviews"}, "/ratings/7", False),
        ({"regex": "/reviews/[0-9]+"}, "/reviews/42", True),
        ({"regex": "/reviews/[0-9]+"}, "/reviews/42/x", False),
    ],
)
def test_uri_matches(store: FakeStore, spec: dict, path: str, matches: bool) -> None:
    http = [{"match": [{"uri": spec}], "route": [dest("v2")]}, {"route": [dest("v1")]}]
    assert route_with(store, http, path=path).workload == (
        "reviews-v2" if matches else "reviews-v1"
    )


def test_match_entries_are_ored_and_conditions_anded(store: FakeStore) -> None:
    http = [
        {
            "match": [
                {"headers": {"end-user": {"exact": "jason"}}, "uri": {"prefix": "/reviews"}},
                {"headers": {"x-canary": {"exact": "1"}}},
            ],
            "route": [dest("v2")],
        },
        {"route": [dest("v1")]},
    ]
    assert (
        route_with(store, http, path="/reviews/1", headers={"end-user": "jason"}).workload
        == "reviews-v2"
    )
    assert (
        route_with(store, http, path="/other", headers={"end-user": "jason"}).workload
        == "reviews-v1"
    )
    assert (
        route_with(store, http, path="/other", headers={"x-canary": "1"}).workload == "reviews-v2"
    )


def test_without_headers(store: FakeStore) -> None:
    http = [
        {"match": [{"withoutHeaders": {"end-user": {"exact": "jason"}}}], "route": [dest("v3")]},
        {"route": [dest("v1")]},
    ]
    assert route_with(store, http).workload == "reviews-v3"
    assert route_with(store, http, headers={"end-user": "bob"}).workload == "reviews-v3"
    assert route_with(store, http, headers={"end-user": "jason"}).workload == "reviews-v1"


def test_weights_split_traffic(store: FakeStore) -> None:
    store.put("virtualservices", split_vs(80, 20))
    assert shares(store) == pytest.approx({"reviews-v1": 0.8, "reviews-v2": 0.2})
    router, rng = MeshRouter(store), random.Random(7)
    picks = [router.route("reviews", rng=rng).workload for _ in range(20_000)]
    assert picks.count("reviews-v2") / len(picks) == pytest.approx(0.2, abs=0.015)


def test_weights_are_relative_and_missing_weight_is_zero(store: FakeStore) -> None:
    store.put(
        "virtualservices",
        virtual_service(["reviews"], [{"route": [dest("v1", 1), dest("v2", 3), dest("v3")]}]),
    )
    assert shares(store) == pytest.approx({"reviews-v1": 0.25, "reviews-v2": 0.75})


def test_lone_destination_takes_everything(store: FakeStore) -> None:
    store.put("virtualservices", virtual_service(["reviews"], [{"route": [dest("v2", 0)]}]))
    assert shares(store) == {"reviews-v2": 1.0}


def test_weights_summing_to_zero_answer_503(store: FakeStore) -> None:
    store.put(
        "virtualservices", virtual_service(["reviews"], [{"route": [dest("v1", 0), dest("v2", 0)]}])
    )
    assert MeshRouter(store).route("reviews").status == 503


def test_deployments_sharing_a_subset_split_by_ready_replicas(store: FakeStore) -> None:
    store.put("deployments", deployment("reviews-v2-b", {"app": "reviews", "version": "v2"}, 3))
    store.put("deployments", deployment("other-v2", {"app": "other", "version": "v2"}, 5))
    store.put("virtualservices", split_vs(50, 50))
    assert shares(store) == pytest.approx(
        {"reviews-v1": 0.5, "reviews-v2": 0.125, "reviews-v2-b": 0.375}
    )


def test_unready_subset_answers_503_no_healthy_upstream() -> None:
    store = bookinfo_reviews(FakeStore(), ready={"v2": 0})
    store.put("virtualservices", split_vs(80, 20))
    assert shares(store) == pytest.approx({"reviews-v1": 0.8, "503": 0.2})
    store.put("virtualservices", virtual_service(["reviews"], [{"route": [dest("v2")]}]))
    result = MeshRouter(store).route("reviews")
    assert (result.status, result.response_flags, result.workload) == (503, "UH", None)
    assert result.reason == "no healthy upstream"
    assert result.subset == "v2"


def test_subset_missing_from_destination_rule_answers_503(store: FakeStore) -> None:
    result = route_with(store, [{"route": [dest("v9")]}])
    assert (result.status, result.response_flags) == (503, "NC")
    assert "v9" in result.reason


def test_no_destination_rule_means_no_subsets() -> None:
    store = FakeStore()
    store.put("services", service("reviews"))
    store.put("deployments", deployment("reviews-v1", {"app": "reviews", "version": "v1"}))
    store.put("virtualservices", virtual_service(["reviews"], [{"route": [dest("v1")]}]))
    assert MeshRouter(store).route("reviews").status == 503


def test_no_matching_route_answers_404(store: FakeStore) -> None:
    result = route_with(store, [{"match": [{"uri": {"prefix": "/x"}}], "route": [dest("v1")]}])
    assert (result.status, result.response_flags) == (404, "NR")


def test_unknown_host_answers_404(store: FakeStore) -> None:
    assert MeshRouter(store).route("nosuchservice").status == 404
    assert MeshRouter(store).route("www.example.com").status == 404


def test_without_virtual_service_the_service_balances_over_ready_pods() -> None:
    store = bookinfo_reviews(FakeStore(), versions=("v1", "v2", "v3"), ready={"v1": 3, "v3": 0})
    store.put("deployments", deployment("ratings-v1", {"app": "ratings", "version": "v1"}))
    assert shares(store) == pytest.approx({"reviews-v1": 0.75, "reviews-v2": 0.25})


def test_service_without_ready_pods_answers_503() -> None:
    store = bookinfo_reviews(FakeStore(), ready={"v1": 0, "v2": 0})
    result = MeshRouter(store).route("reviews")
    assert (result.status, result.response_flags) == (503, "UH")


def test_destination_host_in_another_service(store: FakeStore) -> None:
    store.put("services", service("reviews-canary", {"app": "reviews", "version": "v2"}))
    result = route_with(store, [{"route": [dest(None, host="reviews-canary")]}])
    assert result.workload == "reviews-v2"
    assert result.destination_service == "reviews-canary.default.svc.cluster.local"


def test_virtual_service_bound_only_to_a_gateway_does_not_apply_to_the_mesh(
    store: FakeStore,
) -> None:
    vs = virtual_service(["reviews"], [{"route": [dest("v3")]}])
    vs["spec"]["gateways"] = ["bookinfo-gateway"]
    store.put("virtualservices", vs)
    assert shares(store) == pytest.approx({f"reviews-v{i}": 1 / 3 for i in (1, 2, 3)})


def test_virtual_services_for_one_host_merge_in_creation_order(store: FakeStore) -> None:
    store.put(
        "virtualservices",
        virtual_service(
            ["reviews"],
            [{"match": [{"headers": {"end-user": {"exact": "jason"}}}], "route": [dest("v2")]}],
            name="a-first",
        ),
    )
    store.put(
        "virtualservices",
        virtual_service(
            ["reviews.default.svc.cluster.local"], [{"route": [dest("v1")]}], name="b-second"
        ),
    )
    router = MeshRouter(store)
    assert router.route("reviews", headers={"end-user": "jason"}).workload == "reviews-v2"
    assert router.route("reviews").workload == "reviews-v1"


def test_short_names_resolve_in_the_objects_namespace() -> None:
    store = FakeStore()
    store.put("services", service("reviews", namespace="shop"))
    for v in ("v1", "v2"):
        store.put(
            "deployments",
            deployment(f"reviews-{v}", {"app": "reviews", "version": v}, namespace="shop"),
        )
    store.put(
        "destinationrules",
        destination_rule(
            "reviews", {"v1": {"version": "v1"}, "v2": {"version": "v2"}}, namespace="shop"
        ),
    )
    store.put(
        "virtualservices", virtual_service(["reviews"], [{"route": [dest("v2")]}], namespace="shop")
    )
    router = MeshRouter(store, namespace="default")
    assert router.route("reviews.shop").workload == "reviews-v2"
    assert router.route("reviews").status == 404  # no reviews in the caller's namespace


def test_table_is_rebuilt_only_when_the_revision_moves(store: FakeStore) -> None:
    store.put("virtualservices", split_vs(100, 0))
    router = MeshRouter(store)
    table = router.table()
    assert router.table() is table
    store.put("virtualservices", split_vs(0, 100))
    assert router.table() is not table
    assert router.route("reviews").workload == "reviews-v2"


def test_readiness_is_tracked_across_rebuilds() -> None:
    store = bookinfo_reviews(FakeStore(), ready={"v2": 0})
    router = MeshRouter(store)
    router.table()
    assert router.ready_for("default", "reviews-v2") is None
    store.put("deployments", deployment("reviews-v2", {"app": "reviews", "version": "v2"}))
    router.table()
    first = router.ready_for("default", "reviews-v2")
    assert first is not None and first >= 0
    store.put("virtualservices", split_vs(50, 50))
    router.table()
    assert router.ready_for("default", "reviews-v2") >= first


def test_routes_over_the_sandbox_object_store() -> None:
    store_module = pytest.importorskip("sandbox.kube.store")
    real = store_module.ObjectStore()
    real.create("services", service("reviews"))
    for v in ("v1", "v2"):
        real.create("deployments", deployment(f"reviews-{v}", {"app": "reviews", "version": v}))
    real.create(
        "destinationrules",
        destination_rule("reviews", {"v1": {"version": "v1"}, "v2": {"version": "v2"}}),
    )
    real.create("virtualservices", header_vs())
    router = MeshRouter(real)
    assert router.route("reviews", headers={"end-user": "jason"}).workload == "reviews-v2"
    assert router.route("reviews").workload == "reviews-v1"


def _bookinfo(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((BOOKINFO / name).read_text()) if d]


@pytest.mark.skipif(not BOOKINFO.is_dir(), reason="Istio BookInfo reference files not present")
def test_bookinfo_samples_route_as_documented() -> None:
    store = FakeStore()
    plural = {
        "Service": "services",
        "Deployment": "deployments",
        "DestinationRule": "destinationrules",
        "VirtualService": "virtualservices",
    }
    for doc in _bookinfo("bookinfo.yaml") + _bookinfo("destination-rule-all.yaml"):
        if doc["kind"] == "Deployment":
            doc["status"] = {"readyReplicas": 1}
        if doc["kind"] in plural:
            store.put(plural[doc["kind"]], doc)
    router = MeshRouter(store)
    assert shares(store) == pytest.approx({f"reviews-v{i}": 1 / 3 for i in (1, 2, 3)})
    store.put("virtualservices", _bookinfo("virtual-service-reviews-test-v2.yaml")[0])
    assert router.route("reviews", headers={"end-user": "jason"}).workload == "reviews-v2"
    assert router.route("reviews", headers={"end-user": "bob"}).workload == "reviews-v1"
    store.put("virtualservices", _bookinfo("virtual-service-reviews-80-20.yaml")[0])
    assert shares(store) == pytest.approx({"reviews-v1": 0.8, "reviews-v2": 0.2})
