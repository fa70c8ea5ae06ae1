"""The planner's routing states, checked against Istio's own BookInfo samples and CRDs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from canary.plan import load_plan, parse_plan
from canary.planner import (
    Routing,
    canary_weight,
    phase_named,
    phases,
    rollback_routing,
    routing_for,
)
from tests.support.istio_crds import bookinfo_objects, crd_errors

PLAN = "configs/bookinfo-reviews.yaml"


def routing_meaning(vs: dict) -> list:
    """What a VirtualService does, without names and implicit defaults."""
    meaning = []
    for route in vs["spec"]["http"]:
        destinations = route["route"]
        weights = [d.get("weight", 100 if len(destinations) == 1 else 0) for d in destinations]
        targets = sorted(
            (d["destination"]["host"], d["destination"].get("subset"), w)
            for d, w in zip(destinations, weights, strict=True)
        )
        meaning.append((route.get("match"), targets))
    return [sorted(vs["spec"]["hosts"]), meaning]


def sample(filename: str, name: str = "reviews") -> dict:
    return next(o for o in bookinfo_objects(filename) if o["metadata"]["name"] == name)


@pytest.fixture(scope="module")
def dry_run() -> dict[str, dict]:
    out = subprocess.run(
        [sys.executable, "-m", "canary", "plan", PLAN, "-o", "yaml"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    return {doc["phase"]: doc for doc in yaml.safe_load_all(out)}


def test_dry_run_lists_the_seed_phases_in_order(dry_run):
    assert list(dry_run) == [
        "isolate",
        "deploy",
        "test",
        "header-route",
        "step-1",
        "promote",
        "cleanup",
    ]
    assert [d["canaryWeight"] for d in dry_run.values()] == [0, 0, 0, 0, 20, 100, 100]


def test_isolate_pins_all_traffic_to_v1(dry_run):
    expected = sample("virtual-service-all-v1.yaml")
    assert routing_meaning(dry_run["isolate"]["virtualService"]) == routing_meaning(expected)


def test_header_route_matches_istio_test_v2_sample(dry_run):
    expected = sample("virtual-service-reviews-test-v2.yaml")
    assert routing_meaning(dry_run["header-route"]["virtualService"]) == routing_meaning(expected)


def test_twenty_percent_step_matches_istio_80_20_sample(dry_run):
    expected = sample("virtual-service-reviews-80-20.yaml")
    assert routing_meaning(dry_run["step-1"]["virtualService"]) == routing_meaning(expected)


def test_promote_sends_everything_to_v2(dry_run):
    all_v2 = sample("virtual-service-all-v1.yaml")
    all_v2["spec"]["http"][0]["route"][0]["destination"]["subset"] = "v2"
    assert routing_meaning(dry_run["promote"]["virtualService"]) == routing_meaning(all_v2)


def test_subsets_are_added_before_the_canary_exists_and_stable_dropped_at_cleanup(dry_run):
    def subsets(phase):
        rule = dry_run[phase]["destinationRule"]
        return {s["name"]: s["labels"] for s in rule["spec"]["subsets"]}

    assert subsets("isolate") == {"v1": {"version": "v1"}, "v2": {"version": "v2"}}
    assert subsets("cleanup") == {"v2": {"version": "v2"}}
    assert dry_run["deploy"]["deployments"][0].startswith("create reviews-v2 from reviews-v1")
    assert dry_run["cleanup"]["deployments"] == ["delete reviews-v1"]


def test_test_phase_routes_only_the_run_header_to_the_canary(dry_run):
    first, rest = dry_run["test"]["virtualService"]["spec"]["http"][0], dry_run["test"]
    assert first["match"] == [{"headers": {"x-canary-test": {"exact": "dry-run"}}}]
    assert first["route"] == [{"destination": {"host": "reviews", "subset": "v2"}}]
    default = rest["virtualService"]["spec"]["http"][1]
    assert default["route"] == [{"destination": {"host": "reviews", "subset": "v1"}}]


# --- every object the planner writes is valid Istio -----------------------------------

USER_VS = {
    "apiVersion": "networking.istio.io/v1",
    "kind": "VirtualService",
    "metadata": {"name": "reviews", "namespace": "default", "resourceVersion": "7"},
    "spec": {
        "hosts": ["reviews"],
        "http": [
            {
                "name": "admin",
                "match": [{"uri": {"prefix": "/admin"}}],
                "route": [{"destination": {"host": "ratings", "subset": "v1"}}],
            },
            {
                "name": "main",
                "timeout": "3s",
                "retries": {"attempts": 2},
                "route": [
                    {"destination": {"host": "reviews", "subset": "v1", "port": {"number": 9080}}}
                ],
            },
        ],
    },
}
USER_DR = {
    "apiVersion": "networking.istio.io/v1",
    "kind": "DestinationRule",
    "metadata": {"name": "reviews", "namespace": "default"},
    "spec": {
        "host": "reviews",
        "trafficPolicy": {"loadBalancer": {"simple": "ROUND_ROBIN"}},
        "subsets": [
            {
                "name": "v1",
                "labels": {"version": "v1"},
                "trafficPolicy": {"connectionPool": {"tcp": {"maxConnections": 10}}},
            },
            {"name": "v3", "labels": {"version": "v3"}},
        ],
    },
}


@pytest.mark.parametrize("current", [None, Routing(USER_VS, USER_DR)], ids=["fresh", "existing"])
def test_every_phase_and_rollback_is_valid_against_istio_crds(current):
    plan = load_plan(PLAN)
    states = [routing_for(plan, p, "run-1", current) for p in phases(plan)]
    states.append(rollback_routing(plan, "run-1", current))
    for state in states:
        for obj in (state.virtual_service, state.destination_rule):
            for version in ("v1", "v1beta1", "v1alpha3"):
                viewed = {**obj, "apiVersion": f"networking.istio.io/{version}"}
                assert crd_errors(viewed) == [], (obj["kind"], obj["metadata"])


def test_user_routes_and_policies_stay_where_they_are():
    plan = load_plan(PLAN)
    current = Routing(USER_VS, USER_DR)
    for phase in phases(plan):
        vs = routing_for(plan, phase, "run-1", current).virtual_service
        user = [r for r in vs["spec"]["http"] if not r.get("name", "").startswith("canary-")]
        assert user[0] == USER_VS["spec"]["http"][0]
        assert user[1]["timeout"] == "3s" and user[1]["retries"] == {"attempts": 2}
        assert all(d["destination"]["port"] == {"number": 9080} for d in user[1]["route"])
        assert canary_weight(plan, vs) == phase.canary_weight
    dr = routing_for(plan, phase_named(plan, "step-1"), "run-1", current).destination_rule
    by_name = {s["name"]: s for s in dr["spec"]["subsets"]}
    assert by_name["v3"] == {"name": "v3", "labels": {"version": "v3"}}
    assert by_name["v1"]["trafficPolicy"] == USER_DR["spec"]["subsets"][0]["trafficPolicy"]
    assert dr["spec"]["trafficPolicy"] == USER_DR["spec"]["trafficPolicy"]


def test_named_routes_limit_which_routes_are_split():
    text = Path(PLAN).read_text() + "routing:\n  routes: [main]\n"
    plan = parse_plan(text)
    vs = {
        **USER_VS,
        "spec": {
            **USER_VS["spec"],
            "http": [
                {"name": "other", "route": [{"destination": {"host": "reviews", "subset": "v1"}}]},
                *USER_VS["spec"]["http"],
            ],
        },
    }
    out = routing_for(plan, phase_named(plan, "promote"), "r", Routing(vs, USER_DR))
    by_name = {r["name"]: r for r in out.virtual_service["spec"]["http"]}
    assert by_name["other"]["route"][0]["destination"]["subset"] == "v1"
    assert by_name["main"]["route"][0]["destination"]["subset"] == "v2"


def test_planning_from_its_own_output_changes_nothing():
    plan = load_plan(PLAN)
    for phase in phases(plan):
        once = routing_for(plan, phase, "run-1", Routing(USER_VS, USER_DR))
        assert routing_for(plan, phase, "run-1", once) == once


def test_rollback_removes_match_routes_and_sends_all_to_stable():
    plan = load_plan(PLAN)
    header = routing_for(plan, phase_named(plan, "header-route"), "run-1")
    back = rollback_routing(plan, "run-1", header)
    assert routing_meaning(back.virtual_service) == routing_meaning(
        sample("virtual-service-all-v1.yaml")
    )
    assert [s["name"] for s in back.destination_rule["spec"]["subsets"]] == ["v1"]
    assert back.virtual_service["metadata"]["annotations"]["canary.release/phase"] == "rolled-back"


def test_flagger_step_weight_and_max_weight_expand_to_steps():
    text = Path(PLAN).read_text().replace("stepWeights: [20]", "stepWeight: 10\n  maxWeight: 50")
    plan = parse_plan(text)
    assert [p.canary_weight for p in phases(plan) if p.step] == [10, 20, 30, 40, 50]
