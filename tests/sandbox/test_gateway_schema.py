"""The project's own HTTPRoute schema against the Gateway API's published CRD (reference data).

The built-in schema must declare what the CRD declares (fields, types, bounds, patterns,
defaults, list types) and carry a rule wherever the CRD carries CEL rules, as many. For a
corpus of valid and invalid HTTPRoutes, its verdict is checked three ways: against the
CRD's schema read by the sandbox's engine, against the CRD's schema read by plain
``jsonschema`` (tests/support/gateway_api_crd.py, unknown fields refused), and, for the
rules the CRD states in CEL, against the CRD carrying a rule at the very field refused.
"""

from __future__ import annotations

import copy
import json
from functools import cache
from typing import Any

import pytest
import yaml

from canary.plan import load_plan
from canary.planner import phases, rollback_routing, routing_for
from sandbox.kube.gateway_schema import VERSIONS, GatewayApiValidator, resource_schema
from sandbox.kube.validation import apply_defaults
from tests.sandbox.conftest import REPO
from tests.support.gateway_api_crd import (
    BOOKINFO,
    CRD_FILE,
    bookinfo_objects,
    defaulted,
    route_errors,
)

PLURAL = "httproutes"
PLAN = REPO / "configs" / "bookinfo-reviews-gateway-api.yaml"


@cache
def builtin() -> GatewayApiValidator:
    return GatewayApiValidator()


@cache
def published() -> GatewayApiValidator:
    return GatewayApiValidator(CRD_FILE)


@cache
def crd_schemas() -> dict[str, dict[str, Any]]:
    crd = yaml.safe_load(CRD_FILE.read_text())
    return {v["name"]: v["schema"]["openAPIV3Schema"] for v in crd["spec"]["versions"]}


def strip(node: Any, rules_key: str) -> Any:
    if isinstance(node, dict):
        return {
            k: strip(v, rules_key) for k, v in node.items() if k not in ("description", rules_key)
        }
    if isinstance(node, list):
        return [strip(v, rules_key) for v in node]
    return node


def rule_counts(node: Any, rules_key: str, path: str = "") -> dict[str, int]:
    """Where rules sit in a schema (dotted path, [] for items), and how many."""
    out: dict[str, int] = {}
    if isinstance(node, dict):
        if rules_key in node:
            out[path] = len(node[rules_key])
        for key, sub in (node.get("properties") or {}).items():
            out |= rule_counts(sub, rules_key, f"{path}.{key}")
        if isinstance(node.get("items"), dict):
            out |= rule_counts(node["items"], rules_key, f"{path}[]")
    return out


def test_reference_data_is_there():
    assert CRD_FILE.is_file() and list(BOOKINFO.glob("*.yaml"))
    assert sorted(crd_schemas()) == sorted(VERSIONS)


@pytest.mark.parametrize("version", VERSIONS)
def test_builtin_schema_declares_what_the_crd_declares(version):
    ours = json.dumps(strip(resource_schema(), "x-sandbox-checks"), sort_keys=True)
    theirs = json.dumps(strip(crd_schemas()[version], "x-kubernetes-validations"), sort_keys=True)
    assert ours == theirs


@pytest.mark.parametrize("version", VERSIONS)
def test_builtin_schema_has_a_rule_wherever_the_crd_has_cel_rules(version):
    ours = rule_counts(resource_schema(), "x-sandbox-checks")
    theirs = rule_counts(crd_schemas()[version], "x-kubernetes-validations")
    assert ours == theirs
    assert sum(theirs.values()) > 40


def test_the_crd_file_option_serves_both_versions():
    assert sorted(published().versions(PLURAL)) == sorted(VERSIONS)
    assert sorted(builtin().versions(PLURAL)) == sorted(VERSIONS)


# -------------------------------------------------------------------- corpus
def http_route(rules: list[dict[str, Any]], version: str = "v1", **spec: Any) -> dict[str, Any]:
    parents = spec.pop("parentRefs", [{"group": "", "kind": "Service", "name": "reviews"}])
    return {
        "apiVersion": f"gateway.networking.k8s.io/{version}",
        "kind": "HTTPRoute",
        "metadata": {"name": "reviews", "namespace": "default"},
        "spec": {"parentRefs": parents, "rules": rules, **spec},
    }


def to(*names: str, **extra: Any) -> list[dict[str, Any]]:
    return [{"name": n, "port": 9080, **extra} for n in names]


def rule(**fields: Any) -> dict[str, Any]:
    return {"backendRefs": to("reviews-v1"), **fields}


def path(kind: str, value: str) -> list[dict[str, Any]]:
    return [{"path": {"type": kind, "value": value}}]


def header(name: str, value: str, kind: str = "Exact") -> dict[str, Any]:
    return {"name": name, "type": kind, "value": value}


RICH = http_route(
    [
        {
            "name": "admin",
            "matches": [
                {
                    "path": {"type": "Exact", "value": "/admin"},
                    "headers": [
                        header("x-team", "books"),
                        header("x-id", "[0-9]+", "RegularExpression"),
                    ],
                    "queryParams": [{"name": "debug", "value": "1"}],
                    "method": "GET",
                }
            ],
            "filters": [
                {
                    "type": "RequestHeaderModifier",
                    "requestHeaderModifier": {
                        "set": [{"name": "x-a", "value": "1"}],
                        "remove": ["x-b"],
                    },
                },
                {
                    "type": "URLRewrite",
                    "urlRewrite": {"path": {"type": "ReplaceFullPath", "replaceFullPath": "/"}},
                },
                {
                    "type": "RequestMirror",
                    "requestMirror": {
                        "backendRef": {"name": "reviews-v3", "port": 9080},
                        "percent": 5,
                    },
                },
            ],
            "backendRefs": [
                {"name": "reviews-v1", "port": 9080, "weight": 999999},
                {"name": "reviews-v2", "port": 9080, "weight": 0},
            ],
            "timeouts": {"request": "10s", "backendRequest": "2s"},
        },
        {
            "matches": [{"path": {"type": "PathPrefix", "value": "/old"}}],
            "filters": [
                {
                    "type": "RequestRedirect",
                    "requestRedirect": {
                        "path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/new"},
                        "statusCode": 301,
                    },
                }
            ],
        },
        {
            "matches": [{"path": {"type": "RegularExpression", "value": "/x/(a|b)//"}}],
            "backendRefs": to("reviews"),
        },
    ],
    hostnames=["reviews.default.svc.cluster.local", "*.example.test"],
)


def mutated(base: dict[str, Any], where: str, value: Any) -> dict[str, Any]:
    """`base` with the field at dotted path `where` (list indexes as numbers) set or removed."""
    out = copy.deepcopy(base)
    *parents, last = [int(p) if p.isdigit() else p for p in where.split(".")]
    node: Any = out
    for part in parents:
        node = node[part]
    if value is ...:
        del node[last]
    else:
        node[last] = value
    return out


def planned_routes() -> list[tuple[str, dict[str, Any]]]:
    """Every HTTPRoute the planner writes for the gateway-api walk-through, and its rollback."""
    plan = load_plan(PLAN)
    out, current = [], None
    for phase in phases(plan):
        current = routing_for(plan, phase, "r-1", current)
        out.append((f"phase {phase.name}", current.route))
    out.append(("rollback", rollback_routing(plan, "r-1", current).route))
    return out


VALID: list[tuple[str, dict[str, Any]]] = [
    *[
        (f"sample {f}", d)
        for f in ("route-reviews-v1.yaml", "route-reviews-90-10.yaml")
        for d in bookinfo_objects(f)
        if d["kind"] == "HTTPRoute"
    ],
    *planned_routes(),
    ("rich", RICH),
    ("rich at v1beta1", {**RICH, "apiVersion": "gateway.networking.k8s.io/v1beta1"}),
    ("no rules (defaulted)", mutated(RICH, "spec.rules", ...)),
    ("weight bounds", http_route([rule(backendRefs=to("a", weight=0) + to("b", weight=1000000))])),
    ("16 backends", http_route([rule(backendRefs=to(*[f"b{i}" for i in range(16)]))])),
    (
        "not a Service: no port",
        http_route([rule(backendRefs=[{"group": "x.io", "kind": "Bucket", "name": "b"}])]),
    ),
    (
        "two parents by section",
        http_route(
            [rule()],
            parentRefs=[{"name": "gw", "sectionName": "a"}, {"name": "gw", "sectionName": "b"}],
        ),
    ),
    (
        "128 matches in all",
        http_route([rule(matches=path("PathPrefix", f"/{i}") * 64) for i in range(2)]),
    ),
    ("request timeout 0s", http_route([rule(timeouts={"request": "0s", "backendRequest": "5s"})])),
]

# (label, route, refused fields, what refuses it): the structural schema, its list-map keys
# (x-kubernetes-list-type: map) or a CEL rule.
INVALID: list[tuple[str, dict[str, Any], list[str], str]] = [
    (
        "weight above 1000000",
        http_route([rule(backendRefs=to("a", weight=1000001))]),
        ["spec.rules[0].backendRefs[0].weight"],
        "structural",
    ),
    (
        "negative weight",
        http_route([rule(backendRefs=to("a", weight=-1))]),
        ["spec.rules[0].backendRefs[0].weight"],
        "structural",
    ),
    (
        "weight as a string",
        http_route([rule(backendRefs=to("a", weight="10"))]),
        ["spec.rules[0].backendRefs[0].weight"],
        "structural",
    ),
    (
        "17 backends",
        http_route([rule(backendRefs=to(*[f"b{i}" for i in range(17)]))]),
        ["spec.rules[0].backendRefs"],
        "structural",
    ),
    ("17 rules", http_route([rule() for _ in range(17)]), ["spec.rules"], "structural"),
    (
        "65 matches a rule",
        http_route([rule(matches=path("PathPrefix", "/a") * 65)]),
        ["spec.rules[0].matches"],
        "structural",
    ),
    (
        "backend without a name",
        http_route([rule(backendRefs=[{"port": 9080}])]),
        ["spec.rules[0].backendRefs[0].name"],
        "structural",
    ),
    (
        "port 0",
        http_route([rule(backendRefs=[{"name": "a", "port": 0}])]),
        ["spec.rules[0].backendRefs[0].port"],
        "structural",
    ),
    (
        "unknown field in a rule",
        mutated(RICH, "spec.rules.0.retries", {"attempts": 2}),
        ["spec.rules[0].retries"],
        "structural",
    ),
    (
        "unknown field in a backend",
        http_route([rule(backendRefs=to("a", subset="v1"))]),
        ["spec.rules[0].backendRefs[0].subset"],
        "structural",
    ),
    (
        "unknown field in spec",
        mutated(RICH, "spec.hosts", ["reviews"]),
        ["spec.hosts"],
        "structural",
    ),
    (
        "path type Prefix",
        http_route([rule(matches=path("Prefix", "/a"))]),
        ["spec.rules[0].matches[0].path", "spec.rules[0].matches[0].path.type"],
        "structural",
    ),
    (
        "path value too long",
        http_route([rule(matches=path("PathPrefix", "/" + "a" * 1024))]),
        ["spec.rules[0].matches[0].path.value"],
        "structural",
    ),
    (
        "header match type Prefix",
        http_route([rule(matches=[{"headers": [header("a", "b", "Prefix")]}])]),
        ["spec.rules[0].matches[0].headers[0].type"],
        "structural",
    ),
    (
        "header without a value",
        http_route([rule(matches=[{"headers": [{"name": "end-user"}]}])]),
        ["spec.rules[0].matches[0].headers[0].value"],
        "structural",
    ),
    (
        "header name with a blank",
        http_route([rule(matches=[{"headers": [header("end user", "jason")]}])]),
        ["spec.rules[0].matches[0].headers[0].name"],
        "structural",
    ),
    (
        "header named twice",
        http_route([rule(matches=[{"headers": [header("a", "1"), header("a", "2")]}])]),
        ["spec.rules[0].matches[0].headers"],
        "list-map",
    ),
    (
        "method FETCH",
        http_route([rule(matches=[{"method": "FETCH"}])]),
        ["spec.rules[0].matches[0].method"],
        "structural",
    ),
    (
        "bad hostname",
        mutated(RICH, "spec.hostnames", ["Reviews_1"]),
        ["spec.hostnames[0]"],
        "structural",
    ),
    (
        "parent kind with a dot",
        http_route([rule()], parentRefs=[{"kind": "Service.v1", "name": "reviews"}]),
        ["spec.parentRefs[0].kind"],
        "structural",
    ),
    (
        "timeout of a day",
        http_route([rule(timeouts={"request": "1d"})]),
        ["spec.rules[0].timeouts.request"],
        "structural",
    ),
    (
        "redirect status 307",
        mutated(RICH, "spec.rules.1.filters.0.requestRedirect.statusCode", 307),
        ["spec.rules[1].filters[0].requestRedirect.statusCode"],
        "structural",
    ),
    (
        "17 filters",
        http_route(
            [
                rule(
                    filters=[
                        {
                            "type": "ExtensionRef",
                            "extensionRef": {"group": "x.io", "kind": "K", "name": f"f{i}"},
                        }
                        for i in range(17)
                    ]
                )
            ]
        ),
        ["spec.rules[0].filters"],
        "structural",
    ),
    (
        "relative Exact path",
        http_route([rule(matches=path("Exact", "reviews"))]),
        ["spec.rules[0].matches[0].path"],
        "cel",
    ),
    (
        "prefix with //",
        http_route([rule(matches=path("PathPrefix", "/a//b"))]),
        ["spec.rules[0].matches[0].path"],
        "cel",
    ),
    (
        "prefix with /./",
        http_route([rule(matches=path("PathPrefix", "/a/./b"))]),
        ["spec.rules[0].matches[0].path"],
        "cel",
    ),
    (
        "prefix with %2F",
        http_route([rule(matches=path("PathPrefix", "/a%2Fb"))]),
        ["spec.rules[0].matches[0].path"],
        "cel",
    ),
    (
        "exact path with #",
        http_route([rule(matches=path("Exact", "/a#b"))]),
        ["spec.rules[0].matches[0].path"],
        "cel",
    ),
    (
        "prefix ending in /..",
        http_route([rule(matches=path("PathPrefix", "/a/.."))]),
        ["spec.rules[0].matches[0].path"],
        "cel",
    ),
    (
        "path with a blank",
        http_route([rule(matches=path("Exact", "/a b"))]),
        ["spec.rules[0].matches[0].path"],
        "cel",
    ),
    (
        "Service backend without a port",
        http_route([rule(backendRefs=[{"name": "reviews-v1"}])]),
        ["spec.rules[0].backendRefs[0]"],
        "cel",
    ),
    (
        "mirror of a Service without a port",
        http_route(
            [
                rule(
                    filters=[
                        {"type": "RequestMirror", "requestMirror": {"backendRef": {"name": "m"}}}
                    ]
                )
            ]
        ),
        ["spec.rules[0].filters[0].requestMirror.backendRef"],
        "cel",
    ),
    (
        "redirect beside backends",
        mutated(RICH, "spec.rules.1.backendRefs", to("reviews-v1")),
        ["spec.rules[1]"],
        "cel",
    ),
    (
        "prefix redirect with two matches",
        mutated(RICH, "spec.rules.1.matches", path("PathPrefix", "/a") + path("PathPrefix", "/b")),
        ["spec.rules[1]"],
        "cel",
    ),
    (
        "filter type and field disagree",
        http_route(
            [rule(filters=[{"type": "URLRewrite", "requestHeaderModifier": {"remove": ["a"]}}])]
        ),
        ["spec.rules[0].filters[0]"],
        "cel",
    ),
    (
        "rewrite and redirect together",
        http_route(
            [
                {
                    "filters": [
                        {"type": "URLRewrite", "urlRewrite": {"hostname": "a"}},
                        {"type": "RequestRedirect", "requestRedirect": {"port": 8080}},
                    ]
                }
            ]
        ),
        ["spec.rules[0].filters"],
        "cel",
    ),
    (
        "two header modifiers",
        http_route(
            [
                rule(
                    filters=[
                        {
                            "type": "RequestHeaderModifier",
                            "requestHeaderModifier": {"remove": ["a"]},
                        }
                    ]
                    * 2
                )
            ]
        ),
        ["spec.rules[0].filters"],
        "cel",
    ),
    (
        "full path rewrite without the path",
        http_route(
            [
                rule(
                    filters=[
                        {"type": "URLRewrite", "urlRewrite": {"path": {"type": "ReplaceFullPath"}}}
                    ]
                )
            ]
        ),
        ["spec.rules[0].filters[0].urlRewrite.path"],
        "cel",
    ),
    (
        "mirror percent and fraction",
        http_route(
            [
                rule(
                    filters=[
                        {
                            "type": "RequestMirror",
                            "requestMirror": {
                                "backendRef": {"name": "m", "port": 1},
                                "percent": 5,
                                "fraction": {"numerator": 1},
                            },
                        }
                    ]
                )
            ]
        ),
        ["spec.rules[0].filters[0].requestMirror"],
        "cel",
    ),
    (
        "mirror fraction above 1",
        http_route(
            [
                rule(
                    filters=[
                        {
                            "type": "RequestMirror",
                            "requestMirror": {
                                "backendRef": {"name": "m", "port": 1},
                                "fraction": {"numerator": 3, "denominator": 2},
                            },
                        }
                    ]
                )
            ]
        ),
        ["spec.rules[0].filters[0].requestMirror.fraction"],
        "cel",
    ),
    (
        "backend timeout above request",
        http_route([rule(timeouts={"request": "1s", "backendRequest": "2s"})]),
        ["spec.rules[0].timeouts"],
        "cel",
    ),
    (
        "129 matches in all",
        http_route(
            [
                rule(matches=path("PathPrefix", "/a") * 64),
                rule(matches=path("PathPrefix", "/a") * 64),
                rule(),
            ]
        ),
        ["spec.rules"],
        "cel",
    ),
    (
        "two refs to one parent, one with a section",
        http_route([rule()], parentRefs=[{"name": "gw"}, {"name": "gw", "sectionName": "a"}]),
        ["spec.parentRefs"],
        "cel",
    ),
    (
        "the same parent twice",
        http_route([rule()], parentRefs=[{"kind": "Service", "group": "", "name": "reviews"}] * 2),
        ["spec.parentRefs"],
        "cel",
    ),
]


def error_fields(validator: GatewayApiValidator, route: dict[str, Any]) -> list[str]:
    version = route["apiVersion"].split("/")[1]
    obj = copy.deepcopy(route)
    validator.apply_defaults(PLURAL, version, obj)
    return sorted({e.field for e in validator.errors(PLURAL, version, obj)})


def cel_rule_at(field: str) -> bool:
    """Whether the CRD states a CEL rule for the schema node of this field."""
    where = "".join(f".{p}" if not p.startswith("[") else "[]" for p in _parts(field))
    return where in rule_counts(crd_schemas()["v1"], "x-kubernetes-validations")


def _parts(field: str) -> list[str]:
    out = []
    for dotted in field.split("."):
        name, _, rest = dotted.partition("[")
        out.append(name)
        out += ["[]"] * rest.count("]") if rest else []
    return out


def test_the_corpus_is_broad():
    assert len(VALID) >= 15
    assert sum(1 for c in INVALID if c[3] == "structural") >= 20
    assert sum(1 for c in INVALID if c[3] == "cel") >= 20


@pytest.mark.parametrize(("label", "route"), VALID, ids=[c[0] for c in VALID])
def test_valid_routes_are_accepted_by_both_schemas(label, route):
    assert error_fields(builtin(), route) == []
    assert error_fields(published(), route) == []
    assert route_errors(defaulted(route)) == []


@pytest.mark.parametrize(("label", "route", "fields", "kind"), INVALID, ids=[c[0] for c in INVALID])
def test_invalid_routes_are_refused_where_the_crd_refuses_them(label, route, fields, kind):
    assert error_fields(builtin(), route) == fields
    if kind in ("structural", "list-map"):
        theirs = error_fields(published(), route)
        assert theirs and set(theirs) <= set(fields)
        # What only the built-in schema refuses, a CEL rule of the CRD refuses.
        assert all(cel_rule_at(f) for f in set(fields) - set(theirs)), fields
        # Plain jsonschema does not read x-kubernetes-list-type: map (unique keys).
        assert (route_errors(defaulted(route)) != []) == (kind == "structural")
    else:  # a CEL rule of the CRD: its structural schema alone lets the route through
        assert error_fields(published(), route) == []
        assert route_errors(defaulted(route)) == []
        assert all(cel_rule_at(f) for f in fields), fields


@pytest.mark.parametrize(("label", "route"), VALID, ids=[c[0] for c in VALID])
def test_defaults_are_the_crds(label, route):
    ours = copy.deepcopy(route)
    builtin().apply_defaults(PLURAL, "v1", ours)
    assert ours == defaulted(route)
    theirs = copy.deepcopy(route)
    apply_defaults(crd_schemas()["v1"], theirs)
    assert ours == theirs


def test_defaults_give_a_backend_weight_1_and_a_rule_the_match_everything():
    route = http_route([{"backendRefs": [{"name": "reviews-v1", "port": 9080}]}])
    builtin().apply_defaults(PLURAL, "v1", route)
    assert route["spec"]["rules"] == [
        {
            "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
            "backendRefs": [
                {"group": "", "kind": "Service", "name": "reviews-v1", "port": 9080, "weight": 1}
            ],
        }
    ]
    assert route["spec"]["parentRefs"] == [{"group": "", "kind": "Service", "name": "reviews"}]
