"""The planner's HTTPRoute states, checked against Istio's Gateway API BookInfo samples and
the Gateway API's HTTPRoute CRD."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from canary.cli import plan_table
from canary.plan import load_plan, parse_plan
from canary.planner import (
    HttpRouteRouting,
    phase_named,
    phases,
    rollback_routing,
    routing_for,
    unrouted,
)
from canary.planner.gateway_api import UnwritableRoute
from tests.support.gateway_api_crd import bookinfo_objects, defaulted, route_errors, served_versions

PLAN = "configs/bookinfo-reviews-gateway-api.yaml"


def route_meaning(route: dict[str, Any]) -> list[Any]:
    """What an HTTPRoute does: its parents, and per rule (in order) its matches and the
    share of traffic each backend gets, with the CRD's defaults applied and names left out.

    A parent is its kind, name and port: the samples leave the group out (the CRD would
    default it to gateway.networking.k8s.io), the Gateway API says a Service parent has the
    core group "", and the project writes that.
    """
    spec = defaulted(route)["spec"]
    parents = sorted((p["kind"], p["name"], p.get("port")) for p in spec["parentRefs"])
    rules = []
    for rule in spec["rules"]:
        backends = [b for b in rule.get("backendRefs", []) if b["weight"] > 0]
        total = sum(b["weight"] for b in backends)
        shares = sorted(
            (b["group"], b["kind"], b["name"], b["port"], round(100 * b["weight"] / total, 6))
            for b in backends
        )
        matches = sorted(json.dumps(m, sort_keys=True) for m in rule["matches"])
        rules.append((matches, shares))
    return [parents, rules]


def service_meaning(service: dict[str, Any]) -> tuple[str, dict[str, str], list[int]]:
    spec = service["spec"]
    return service["metadata"]["name"], spec["selector"], [p["port"] for p in spec["ports"]]


def sample(filename: str, name: str = "reviews") -> dict[str, Any]:
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


def test_dry_run_lists_the_phases_with_an_http_route_each(dry_run):
    assert list(dry_run) == [
        "isolate",
        "deploy",
        "test",
        "header-route",
        "step-1",
        "step-2",
        "promote",
        "cleanup",
    ]
    assert [d["canaryWeight"] for d in dry_run.values()] == [0, 0, 0, 0, 10, 50, 100, 100]
    for doc in dry_run.values():
        assert doc["httpRoute"]["kind"] == "HTTPRoute"
        assert "virtualService" not in doc and "destinationRule" not in doc


def test_isolate_equals_istios_all_to_v1_sample(dry_run):
    expected = sample("route-reviews-v1.yaml")
    assert route_meaning(dry_run["isolate"]["httpRoute"]) == route_meaning(expected)


def test_ten_percent_step_equals_istios_90_10_sample(dry_run):
    expected = sample("route-reviews-90-10.yaml")
    assert route_meaning(dry_run["step-1"]["httpRoute"]) == route_meaning(expected)


def test_the_parent_is_the_core_service_itself(dry_run):
    for doc in dry_run.values():
        assert doc["httpRoute"]["spec"]["parentRefs"] == [
            {"group": "", "kind": "Service", "name": "reviews", "port": 9080}
        ]


def test_the_per_version_services_select_as_istios_samples_do(dry_run):
    samples = {s["metadata"]["name"]: s for s in bookinfo_objects("bookinfo-versions.yaml")}
    services = dry_run["isolate"]["services"]
    assert [service_meaning(s) for s in services] == [
        service_meaning(samples["reviews-v1"]),
        service_meaning(samples["reviews-v2"]),
    ]
    for service in services:
        assert service["metadata"]["annotations"] == {"canary.release/release-id": "dry-run"}


def test_services_are_listed_from_isolate_and_stables_dropped_at_cleanup(dry_run):
    def names(phase: str) -> list[str]:
        return [s["metadata"]["name"] for s in dry_run[phase]["services"]]

    assert names("isolate") == names("promote") == ["reviews-v1", "reviews-v2"]
    assert names("cleanup") == ["reviews-v2"]
    assert dry_run["cleanup"]["deployments"] == ["delete reviews-v1"]


def test_header_route_is_a_header_match_rule_to_the_canary_above_the_weighted_rule(dry_run):
    header, weighted = dry_run["header-route"]["httpRoute"]["spec"]["rules"]
    assert header["name"] == "canary-header"
    assert header["matches"] == [
        {
            "path": {"type": "PathPrefix", "value": "/"},
            "headers": [{"name": "end-user", "type": "Exact", "value": "jason"}],
        }
    ]
    assert [(b["name"], b["weight"]) for b in header["backendRefs"]] == [("reviews-v2", 100)]
    assert "name" not in weighted
    assert [(b["name"], b["weight"]) for b in weighted["backendRefs"]] == [("reviews-v1", 100)]


def test_test_phase_routes_only_the_run_header_to_the_canary(dry_run):
    test_rule, weighted = dry_run["test"]["httpRoute"]["spec"]["rules"]
    assert test_rule["name"] == "canary-test"
    assert test_rule["matches"][0]["headers"] == [
        {"name": "x-canary-test", "type": "Exact", "value": "dry-run"}
    ]
    assert [b["name"] for b in test_rule["backendRefs"]] == ["reviews-v2"]
    assert [b["name"] for b in weighted["backendRefs"]] == ["reviews-v1"]


def test_a_regex_match_is_a_regular_expression_header_match():
    text = Path(PLAN).read_text().replace("exact: jason", "regex: '^(jason|ann)$'")
    plan = parse_plan(text)
    route = routing_for(plan, phase_named(plan, "header-route"), "r").route
    assert route["spec"]["rules"][0]["matches"][0]["headers"] == [
        {"name": "end-user", "type": "RegularExpression", "value": "^(jason|ann)$"}
    ]


def test_a_uri_match_is_a_path_match_of_its_own():
    text = (
        Path(PLAN)
        .read_text()
        .replace(
            "    - headers:\n        end-user:\n          exact: jason",
            "    - uri: {prefix: /reviews/2}\n      headers: {end-user: {exact: jason}}",
        )
    )
    plan = parse_plan(text)
    state = routing_for(plan, phase_named(plan, "header-route"), "r", HttpRouteRouting(USER_ROUTE))
    assert state.http_route["spec"]["rules"][0]["matches"] == [
        {
            "path": {"type": "PathPrefix", "value": "/reviews/2"},
            "headers": [{"name": "end-user", "type": "Exact", "value": "jason"}],
        }
    ]


def test_the_table_shows_the_services_and_what_happens_to_them():
    table = plan_table(load_plan(PLAN)).splitlines()
    assert table[0].split() == [
        "PHASE",
        "reviews-v1",
        "reviews-v2",
        "HOLD",
        "SERVICES",
        "DEPLOYMENTS",
    ]
    rows = {line.split()[0]: line for line in table[1:]}
    assert "create reviews-v1 if missing; create reviews-v2 if missing" in rows["isolate"]
    assert rows["step-1"].split()[1:3] == ["90%", "10%"]
    assert "delete reviews-v1 if this release created it" in rows["cleanup"]


# --- every object the planner writes is a valid HTTPRoute, as the server stores it -------

USER_ROUTE = {
    "apiVersion": "gateway.networking.k8s.io/v1",
    "kind": "HTTPRoute",
    "metadata": {
        "name": "reviews",
        "namespace": "default",
        "resourceVersion": "7",
        "labels": {"team": "books"},
    },
    "spec": {
        "parentRefs": [{"group": "", "kind": "Service", "name": "reviews", "port": 9080}],
        "rules": [
            {
                "name": "admin",
                "matches": [{"path": {"type": "PathPrefix", "value": "/admin"}}],
                "backendRefs": [
                    {"group": "", "kind": "Service", "name": "ratings", "port": 9080, "weight": 1}
                ],
            },
            {
                "name": "main",
                "matches": [{"path": {"type": "PathPrefix", "value": "/reviews"}}],
                "filters": [
                    {
                        "type": "RequestHeaderModifier",
                        "requestHeaderModifier": {"set": [{"name": "x-team", "value": "books"}]},
                    }
                ],
                "timeouts": {"request": "3s"},
                "backendRefs": [
                    {"group": "", "kind": "Service", "name": "reviews", "port": 9080, "weight": 1}
                ],
            },
        ],
    },
}


def states_of(plan: Any, current: HttpRouteRouting | None) -> list[HttpRouteRouting]:
    states = [routing_for(plan, p, "run-1", current) for p in phases(plan)]
    states.append(rollback_routing(plan, "run-1", current))
    return states


@pytest.mark.parametrize("current", [None, HttpRouteRouting(USER_ROUTE)], ids=["fresh", "existing"])
def test_every_phase_and_rollback_is_valid_against_the_httproute_crd(current):
    plan = load_plan(PLAN)
    assert served_versions() == ["v1", "v1beta1"]
    for state in states_of(plan, current):
        for version in served_versions():
            assert route_errors(state.http_route, version) == [], state.http_route["metadata"]


@pytest.mark.parametrize("current", [None, HttpRouteRouting(USER_ROUTE)], ids=["fresh", "existing"])
def test_what_is_written_is_what_a_server_reads_back(current):
    """The CRD's defaults are written out, so a read-back with defaults applied is equal."""
    plan = load_plan(PLAN)
    for state in states_of(plan, current):
        assert defaulted(state.http_route) == state.http_route
    assert route_errors(unrouted(plan)) == [] and defaulted(unrouted(plan)) == unrouted(plan)


def test_user_rules_filters_and_timeouts_stay_where_they_are():
    plan = load_plan(PLAN)
    current = HttpRouteRouting(USER_ROUTE)
    admin, main = USER_ROUTE["spec"]["rules"]
    for phase in phases(plan):
        state = routing_for(plan, phase, "run-1", current)
        rules = state.http_route["spec"]["rules"]
        user = [r for r in rules if not r.get("name", "").startswith("canary-")]
        assert user[0] == admin
        assert user[1]["filters"] == main["filters"] and user[1]["timeouts"] == main["timeouts"]
        assert user[1]["matches"] == main["matches"]
        assert state.canary_weight(plan) == phase.canary_weight
    assert state.http_route["metadata"]["labels"] == {"team": "books"}


def test_a_match_rule_narrows_each_split_rule_so_it_wins_by_precedence():
    """Gateway API picks the most specific match, not the first rule: the header rule
    takes the split rule's path, so it is at least as specific and has more headers."""
    plan = load_plan(PLAN)
    state = routing_for(plan, phase_named(plan, "header-route"), "r", HttpRouteRouting(USER_ROUTE))
    header = state.http_route["spec"]["rules"][0]
    assert header["matches"] == [
        {
            "path": {"type": "PathPrefix", "value": "/reviews"},
            "headers": [{"name": "end-user", "type": "Exact", "value": "jason"}],
        }
    ]


def test_named_routes_limit_which_rules_are_split():
    plan = parse_plan(
        Path(PLAN).read_text().replace("port: 9080\ntests", "port: 9080\n  routes: [main]\ntests")
    )
    route = copy.deepcopy(USER_ROUTE)
    other = {
        "name": "other",
        "backendRefs": [
            {"group": "", "kind": "Service", "name": "reviews-v1", "port": 9080, "weight": 1}
        ],
    }
    route["spec"]["rules"].insert(0, other)
    out = routing_for(plan, phase_named(plan, "promote"), "r", HttpRouteRouting(route))
    by_name = {r["name"]: r for r in out.http_route["spec"]["rules"]}
    assert by_name["other"]["backendRefs"] == other["backendRefs"]
    assert [b["name"] for b in by_name["main"]["backendRefs"]] == ["reviews-v2"]
    cleanup = routing_for(plan, phase_named(plan, "cleanup"), "r", HttpRouteRouting(route))
    assert cleanup.service_names() == ["reviews-v1", "reviews-v2"]  # "other" still names v1


def test_planning_from_its_own_output_changes_nothing():
    plan = load_plan(PLAN)
    for phase in phases(plan):
        once = routing_for(plan, phase, "run-1", HttpRouteRouting(USER_ROUTE))
        assert routing_for(plan, phase, "run-1", once) == once


def test_rollback_removes_match_rules_sends_all_to_stable_and_drops_the_canarys_service():
    plan = load_plan(PLAN)
    header = routing_for(plan, phase_named(plan, "header-route"), "run-1")
    back = rollback_routing(plan, "run-1", header)
    assert route_meaning(back.http_route) == route_meaning(sample("route-reviews-v1.yaml"))
    assert back.service_names() == ["reviews-v1"]
    assert back.managed_route_names() == []
    assert back.http_route["metadata"]["annotations"]["canary.release/phase"] == "rolled-back"


def test_a_route_beyond_the_gateway_apis_bounds_is_a_clear_error():
    plan = load_plan(PLAN)
    route = copy.deepcopy(USER_ROUTE)
    extra = copy.deepcopy(route["spec"]["rules"][0])
    route["spec"]["rules"] += [{**extra, "name": f"admin-{i}"} for i in range(14)]
    routing_for(plan, phase_named(plan, "isolate"), "r", HttpRouteRouting(route))  # 16 rules
    with pytest.raises(UnwritableRoute, match=r"HTTPRoute default/reviews would hold 17 rules"):
        routing_for(plan, phase_named(plan, "test"), "r", HttpRouteRouting(route))


def test_a_redirecting_rule_named_to_be_split_is_a_clear_error():
    plan = parse_plan(
        Path(PLAN).read_text().replace("port: 9080\ntests", "port: 9080\n  routes: [old]\ntests")
    )
    route = copy.deepcopy(USER_ROUTE)
    redirect = {"type": "RequestRedirect", "requestRedirect": {"statusCode": 301}}
    route["spec"]["rules"].append({"name": "old", "filters": [redirect]})
    with pytest.raises(UnwritableRoute, match="rule old redirects, so it cannot be split"):
        routing_for(plan, phase_named(plan, "isolate"), "r", HttpRouteRouting(route))
