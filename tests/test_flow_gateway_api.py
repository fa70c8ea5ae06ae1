"""The canary-release flow on the Gateway API, promoted and rolled back, on the in-memory
API (see tests/support/gateway_releases.py): an HTTPRoute per phase, read back after every
write, per-version Services created and cleaned up by the release that made them."""

from __future__ import annotations

from typing import Any

import pytest

from canary.cluster import created_by, is_ready
from canary.lease import LEASE, OUTCOME, annotations_of
from canary.planner import HttpRouteRouting
from flows.canary_release import ReleaseRolledBack, canary_release
from tests.support.gateway_releases import bookinfo, gateway_plan, release_into
from tests.test_gateway_api_router import assert_no_rule_ever_named_a_missing_service

pytestmark = pytest.mark.usefixtures("prefect_api_url")


def backends(kube: Any) -> list[list[tuple[str, int]]]:
    route = kube.get("httproutes", "reviews")
    return [[(b["name"], b["weight"]) for b in r["backendRefs"]] for r in route["spec"]["rules"]]


def test_a_gateway_api_release_is_promoted(monkeypatch, plan_data):
    kube, plan = bookinfo(), gateway_plan(plan_data)
    release_into(monkeypatch, kube)

    result = canary_release(plan, release_id="r-gw")

    assert result.outcome == "promoted"
    assert [p.name for p in result.phases] == [
        "isolate",
        "deploy",
        "test",
        "header-route",
        "step-1",
        "promote",
        "cleanup",
    ]
    assert backends(kube) == [[("reviews-v2", 100)]]
    assert HttpRouteRouting(kube.get("httproutes", "reviews")).managed_route_names() == []
    assert kube.get("services", "reviews-v1") is None  # created by this release, retired
    assert created_by(kube.get("services", "reviews-v2")) == "r-gw"  # carries the traffic
    assert kube.get("services", "reviews") is not None
    assert kube.get("deployments", "reviews-v1") is None
    assert is_ready(kube.get("deployments", "reviews-v2"))
    notes = annotations_of(kube.get("httproutes", "reviews"))
    assert LEASE not in notes and notes[OUTCOME] == "promoted"
    assert kube.get("virtualservices", "reviews") is None
    assert assert_no_rule_ever_named_a_missing_service(kube) > 10


def test_a_failing_canary_is_rolled_back_and_the_release_cleans_up_after_itself(
    monkeypatch, plan_data
):
    kube, plan = bookinfo(), gateway_plan(plan_data, checks_pass=False)
    release_into(monkeypatch, kube)

    state = canary_release(plan, release_id="r-gw", return_state=True)

    error = state.result(raise_on_failure=False)
    assert isinstance(error, ReleaseRolledBack)
    assert (error.result.outcome, error.result.failed_phase) == ("rolled-back", "test")
    assert backends(kube) == [[("reviews-v1", 100)]]  # the test rule gone, all on stable
    assert kube.get("services", "reviews-v2") is None
    assert created_by(kube.get("services", "reviews-v1")) == "r-gw"
    assert kube.get("deployments", "reviews-v2") is None
    assert is_ready(kube.get("deployments", "reviews-v1"))
    assert annotations_of(kube.get("httproutes", "reviews"))[OUTCOME] == "rolled-back"
    assert assert_no_rule_ever_named_a_missing_service(kube) > 3


def test_a_release_uses_the_services_it_finds_and_leaves_them(monkeypatch, plan_data):
    kube, plan = bookinfo(), gateway_plan(plan_data, checks_pass=False)
    for version in ("v1", "v2"):
        kube.put(
            "services",
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": f"reviews-{version}"},
                "spec": {
                    "selector": {"app": "reviews", "version": version},
                    "ports": [{"name": "http", "port": 9080}],
                },
            },
        )
    release_into(monkeypatch, kube)

    with pytest.raises(ReleaseRolledBack):
        canary_release(plan, release_id="r-gw")

    for name in ("reviews-v1", "reviews-v2"):
        assert created_by(kube.get("services", name)) is None
    assert not [r for r in kube.writes() if "/services" in r.path]
