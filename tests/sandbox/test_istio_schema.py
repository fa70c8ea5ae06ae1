"""The project's own Istio schema against Istio's published CRDs (reference data).

For a corpus of valid and invalid VirtualServices and DestinationRules, the built-in
schema must give the verdict, and name the fields, that the published CRD schema gives.
The published verdict is computed twice: with the sandbox's structural-schema engine on
the CRD file, and with plain ``jsonschema`` on the CRD schema (unknown fields refused), so
that a mistake shared by the engine and the built-in schema cannot hide.
"""

from __future__ import annotations

import copy
import json
from functools import cache
from typing import Any

import jsonschema
import pytest
import yaml

from sandbox.kube.istio_schema import VERSIONS, IstioValidator, resource_schema
from sandbox.kube.validation import parse_duration_ns
from tests.sandbox.conftest import REFERENCE

CRD_FILE = REFERENCE / "networking-crds.yaml"
BOOKINFO = REFERENCE / "bookinfo"
GROUP = "networking.istio.io"
PLURALS = {"VirtualService": "virtualservices", "DestinationRule": "destinationrules"}


@cache
def builtin() -> IstioValidator:
    return IstioValidator()


@cache
def published() -> IstioValidator:
    return IstioValidator(CRD_FILE)


@cache
def crd_documents() -> dict[tuple[str, str], dict[str, Any]]:
    out = {}
    for doc in yaml.safe_load_all(CRD_FILE.read_text()):
        if doc and doc["spec"]["names"]["kind"] in PLURALS:
            for version in doc["spec"]["versions"]:
                out[(doc["spec"]["names"]["kind"], version["name"])] = version["schema"][
                    "openAPIV3Schema"
                ]
    return out


def _closed(node: Any) -> Any:
    """Plain JSON Schema reading of a CRD schema: declared fields only."""
    if isinstance(node, list):
        return [_closed(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _closed(v) for k, v in node.items() if k != "nullable"}
    if node.get("nullable") and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    if (
        out.get("type") == "object"
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


PLAIN_FORMATS = jsonschema.FormatChecker(formats=())


@PLAIN_FORMATS.checks("int32")
def _int32(value: Any) -> bool:
    return not isinstance(value, int) or -(2**31) <= value < 2**31


@cache
def plain_validator(kind: str, version: str) -> jsonschema.Draft7Validator:
    schema = copy.deepcopy(crd_documents()[(kind, version)])
    schema["properties"]["spec"] = _closed(schema["properties"]["spec"])
    return jsonschema.Draft7Validator(schema, format_checker=PLAIN_FORMATS)


def _cel_ok(spec: Any) -> bool:
    """The CEL rules of the corpus, which plain jsonschema cannot evaluate."""
    labels = ((spec or {}).get("workloadSelector") or {}).get("matchLabels") or {}
    wildcard = any("*" in k or "*" in str(v) or not k for k, v in labels.items())
    return not wildcard and _durations_ok(spec)


def _durations_ok(node: Any) -> bool:
    """The duration rule: Go duration syntax, at least 1 ms."""
    keys = {
        "timeout",
        "perTryTimeout",
        "backoff",
        "fixedDelay",
        "exponentialDelay",
        "maxAge",
        "interval",
        "baseEjectionTime",
        "connectTimeout",
        "maxConnectionDuration",
        "time",
    }
    if isinstance(node, dict):
        for key, value in node.items():
            if key in keys and isinstance(value, str):
                try:
                    if parse_duration_ns(value) < 1e6:
                        return False
                except ValueError:
                    return False
            elif not _durations_ok(value):
                return False
    elif isinstance(node, list):
        return all(_durations_ok(v) for v in node)
    return True


def verdicts(obj: dict[str, Any]) -> tuple[list[str], list[str], bool]:
    """(built-in error fields, published error fields, plain jsonschema validity)."""
    kind = obj["kind"]
    version = obj["apiVersion"].split("/")[1]
    mine = [e.field for e in builtin().errors(PLURALS[kind], version, obj)]
    theirs = [e.field for e in published().errors(PLURALS[kind], version, obj)]
    plain = plain_validator(kind, version).is_valid(obj) and _cel_ok(obj.get("spec"))
    return mine, theirs, plain


# -------------------------------------------------------------------- corpus
def vs(spec: dict[str, Any], version: str = "v1") -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{version}",
        "kind": "VirtualService",
        "metadata": {"name": "reviews"},
        "spec": spec,
    }


def dr(spec: dict[str, Any], version: str = "v1") -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{version}",
        "kind": "DestinationRule",
        "metadata": {"name": "reviews"},
        "spec": spec,
    }


def route(*destinations: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"hosts": ["reviews"], "http": [{"route": list(destinations), **extra}]}


def to(subset: str, weight: Any = None, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"destination": {"host": "reviews", "subset": subset}, **extra}
    if weight is not None:
        out["weight"] = weight
    return out


RICH_VS = {
    "hosts": ["reviews", "reviews.default.svc.cluster.local"],
    "gateways": ["mesh"],
    "exportTo": ["."],
    "http": [
        {
            "name": "jason",
            "match": [
                {
                    "headers": {"end-user": {"exact": "jason"}},
                    "uri": {"prefix": "/reviews"},
                    "queryParams": {"debug": {"regex": "^1$"}},
                    "ignoreUriCase": True,
                    "sourceLabels": {"app": "productpage"},
                    "withoutHeaders": {"x-skip": {}},
                }
            ],
            "route": [to("v2", 100, headers={"request": {"set": {"x-canary": "1"}}})],
            "rewrite": {"uri": "/", "authority": "reviews"},
            "timeout": "10s",
            "retries": {
                "attempts": 3,
                "perTryTimeout": "2s",
                "retryOn": "5xx,reset",
                "retryRemoteLocalities": None,
            },
            "fault": {
                "delay": {"fixedDelay": "1.5s", "percentage": {"value": 0.5}},
                "abort": {"httpStatus": 503, "percentage": {"value": 0.1}},
            },
            "mirror": {"host": "reviews", "subset": "v3", "port": {"number": 9080}},
            "mirrorPercentage": {"value": 5.0},
            "corsPolicy": {
                "allowOrigins": [{"exact": "https://example.com"}],
                "allowMethods": ["GET"],
                "maxAge": "24h",
                "allowCredentials": False,
            },
            "headers": {"response": {"remove": ["x-internal"], "add": {"x-version": "v2"}}},
        },
        {
            "route": [to("v1", 90), to("v2", 10)],
        },
    ],
    "tcp": [{"match": [{"port": 9080}], "route": [to("v1")]}],
    "tls": [{"match": [{"sniHosts": ["reviews.example.com"]}], "route": [to("v1")]}],
}
RICH_DR = {
    "host": "reviews.default.svc.cluster.local",
    "trafficPolicy": {
        "loadBalancer": {"simple": "LEAST_REQUEST"},
        "connectionPool": {
            "tcp": {"maxConnections": 100, "connectTimeout": "30ms"},
            "http": {"http2MaxRequests": 1000, "idleTimeout": "1h", "h2UpgradePolicy": "UPGRADE"},
        },
        "outlierDetection": {
            "consecutive5xxErrors": 7,
            "interval": "5m",
            "baseEjectionTime": "15m",
            "maxEjectionPercent": 100,
        },
        "tls": {"mode": "ISTIO_MUTUAL"},
        "portLevelSettings": [
            {
                "port": {"number": 9080},
                "loadBalancer": {"consistentHash": {"httpHeaderName": "x-user", "ringHash": {}}},
            }
        ],
    },
    "subsets": [
        {"name": "v1", "labels": {"version": "v1"}},
        {
            "name": "v2",
            "labels": {"version": "v2"},
            "trafficPolicy": {"loadBalancer": {"simple": "ROUND_ROBIN"}},
        },
    ],
    "exportTo": ["*"],
    "workloadSelector": {"matchLabels": {"app": "reviews"}},
}


def _mutated(base: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of ``base`` with ``value`` set at a dotted path (``...`` deletes the key)."""
    out = copy.deepcopy(base)
    *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
    node: Any = out
    for part in parents:
        node = node[part]
    if value is ...:
        del node[last]
    else:
        node[last] = value
    return out


def _bookinfo_istio() -> list[tuple[str, dict[str, Any], bool]]:
    out = []
    for path in sorted(BOOKINFO.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc["kind"] in PLURALS:
                out.append((f"{path.stem}:{doc['kind']}:{doc['metadata']['name']}", doc, True))
    return out


CORPUS: list[tuple[str, dict[str, Any], bool]] = [
    *_bookinfo_istio(),
    ("rich virtual service", vs(RICH_VS), True),
    ("rich destination rule", dr(RICH_DR), True),
    ("rich virtual service v1alpha3", vs(RICH_VS, "v1alpha3"), True),
    ("rich destination rule v1beta1", dr(RICH_DR, "v1beta1"), True),
    ("empty spec", vs({}), True),
    ("weight 0", vs(route(to("v1", 0), to("v2", 100))), True),
    ("legacy mirror_percent", vs(route(to("v1"), mirror_percent=10)), True),
    ("string weight", vs(route(to("v1", "80"))), False),
    ("fractional weight", vs(route(to("v1", 80.5))), False),
    ("weight beyond int32", vs(route(to("v1", 2**31))), False),
    ("unknown field under route", vs(route(to("v1", foo=1))), False),
    ("unknown field under spec", vs(route(to("v1")) | {"foo": True}), False),
    (
        "unknown field under destination",
        vs(route({"destination": {"host": "r", "zone": 1}})),
        False,
    ),
    ("missing destination.host", vs(route({"destination": {"subset": "v1"}})), False),
    ("route without destination", vs(route({"weight": 100})), False),
    (
        "negative port number",
        vs(route({"destination": {"host": "reviews", "port": {"number": -1}}})),
        False,
    ),
    ("hosts is a string", vs({"hosts": "reviews"}), False),
    ("http is an object", vs({"hosts": ["reviews"], "http": {"route": []}}), False),
    (
        "uri with exact and prefix",
        vs(
            route(to("v1"))
            | {"http": [{"match": [{"uri": {"exact": "/a", "prefix": "/"}}], "route": [to("v1")]}]}
        ),
        False,
    ),
    (
        "header match with prefix only",
        vs(
            {
                "http": [
                    {"match": [{"headers": {"end-user": {"prefix": "ja"}}}], "route": [to("v2")]}
                ]
            }
        ),
        True,
    ),
    ("timeout without unit", vs(route(to("v1"), timeout="10")), False),
    ("timeout below 1ms", vs(route(to("v1"), timeout="500us")), False),
    ("timeout compound", vs(route(to("v1"), timeout="1m30s")), True),
    ("retries attempts as string", vs(route(to("v1"), retries={"attempts": "3"})), False),
    ("nullable retry flag", vs(route(to("v1"), retries={"retryRemoteLocalities": None})), True),
    ("null on a non-nullable field", vs(route(to("v1"), timeout=None)), False),
    (
        "direct response without status",
        vs({"http": [{"directResponse": {"body": {"string": "x"}}}]}),
        False,
    ),
    (
        "abort with two kinds",
        vs(route(to("v1"), fault={"abort": {"httpStatus": 500, "grpcStatus": "UNAVAILABLE"}})),
        False,
    ),
    (
        "redirect with port and derivePort",
        vs({"http": [{"redirect": {"port": 8080, "derivePort": "FROM_REQUEST_PORT"}}]}),
        False,
    ),
    (
        "redirect derivePort not in enum",
        vs({"http": [{"redirect": {"derivePort": "FROM_NOWHERE"}}]}),
        False,
    ),
    ("negative mirror percent", vs(route(to("v1"), mirrorPercent=-1)), False),
    (
        "header set value not a string",
        vs(route(to("v1", headers={"request": {"set": {"x-a": 1}}}))),
        False,
    ),
    ("tls route without match", vs({"tls": [{"route": [to("v1")]}]}), False),
    ("tls match without sniHosts", vs({"tls": [{"match": [{"port": 443}]}]}), False),
    ("destination rule without host", dr({"subsets": [{"name": "v1"}]}), False),
    ("subset without name", dr({"host": "reviews", "subsets": [{"labels": {"v": "1"}}]}), False),
    (
        "subset label value not a string",
        dr({"host": "reviews", "subsets": [{"name": "v1", "labels": {"version": 1}}]}),
        False,
    ),
    (
        "unknown load balancer",
        dr({"host": "r", "trafficPolicy": {"loadBalancer": {"simple": "FASTEST"}}}),
        False,
    ),
    (
        "simple and consistentHash",
        dr(
            {
                "host": "r",
                "trafficPolicy": {
                    "loadBalancer": {"simple": "RANDOM", "consistentHash": {"useSourceIp": True}}
                },
            }
        ),
        False,
    ),
    (
        "two hash keys",
        dr(
            {
                "host": "r",
                "trafficPolicy": {
                    "loadBalancer": {"consistentHash": {"useSourceIp": True, "httpHeaderName": "x"}}
                },
            }
        ),
        False,
    ),
    (
        "tls mode not in enum",
        dr({"host": "r", "trafficPolicy": {"tls": {"mode": "STRICT"}}}),
        False,
    ),
    (
        "http error code out of range",
        dr(
            {
                "host": "r",
                "trafficPolicy": {"outlierDetection": {"outlierDetectionHttpErrorCodes": [99]}},
            }
        ),
        False,
    ),
    (
        "tunnel without targetPort",
        dr({"host": "r", "trafficPolicy": {"tunnel": {"targetHost": "proxy"}}}),
        False,
    ),
    (
        "bad outlier interval",
        dr({"host": "r", "trafficPolicy": {"outlierDetection": {"interval": "often"}}}),
        False,
    ),
    (
        "unknown field under subset",
        dr({"host": "r", "subsets": [{"name": "v1", "weight": 1}]}),
        False,
    ),
    (
        "wildcard workload selector",
        dr({"host": "r", "workloadSelector": {"matchLabels": {"app": "*"}}}),
        False,
    ),
    (
        "mutated rich vs: weight string",
        _mutated(vs(RICH_VS), "spec.http.1.route.0.weight", "90"),
        False,
    ),
    ("mutated rich dr: no host", _mutated(dr(RICH_DR), "spec.host", ...), False),
]


def test_reference_data_is_there():
    assert CRD_FILE.is_file() and list(BOOKINFO.glob("*.yaml"))
    assert sum(1 for _, _, ok in CORPUS if ok) >= 10
    assert sum(1 for _, _, ok in CORPUS if not ok) >= 30


@pytest.mark.parametrize(("label", "obj", "valid"), CORPUS, ids=[c[0] for c in CORPUS])
def test_builtin_schema_agrees_with_the_published_crds(label, obj, valid):
    mine, theirs, plain = verdicts(obj)
    assert mine == theirs, f"{label}: built-in {mine} != published {theirs}"
    assert (not theirs) == plain, f"{label}: engine and plain jsonschema disagree"
    assert (not mine) == valid, f"{label}: expected {'valid' if valid else 'invalid'}: {mine}"


@pytest.mark.parametrize("kind", sorted(PLURALS))
@pytest.mark.parametrize("version", VERSIONS)
def test_builtin_schema_declares_what_the_crds_declare(kind, version):
    """Same fields, types, bounds and rules as the published schema (descriptions aside)."""

    def strip(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: strip(v) for k, v in node.items() if k != "description"}
        if isinstance(node, list):
            return [strip(v) for v in node]
        return node

    ours = json.dumps(strip(resource_schema(kind)), sort_keys=True)
    theirs = json.dumps(strip(crd_documents()[(kind, version)]), sort_keys=True)
    assert ours == theirs


def test_crd_file_option_serves_every_version():
    for plural in PLURALS.values():
        assert sorted(published().versions(plural)) == sorted(VERSIONS)
