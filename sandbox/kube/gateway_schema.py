"""Validation schema of the Kubernetes Gateway API's HTTPRoute (``gateway.networking.k8s.io``).

Written for this project as compact Python, from the Gateway API's published API reference
(gateway-api.sigs.k8s.io, "API specification", HTTPRoute of the standard channel, v1.4;
the API is Apache-2.0, Copyright The Kubernetes Authors). The schema has the shape the
HTTPRoute CustomResourceDefinition gives: an OpenAPI v3 structural schema where every
object declares its fields (unknown fields are refused, as the API server refuses them
under ``fieldValidation=Strict``), with the documented bounds (a backend's ``weight``
0..1000000, at most 16 rules, 64 matches a rule, 16 backendRefs, 16 filters, 32 parentRefs,
16 hostnames), patterns and defaults (``parentRefs`` default to a Gateway, ``backendRefs``
to a core Service of weight 1, a rule to the match ``PathPrefix /``, header and query
matches to ``Exact``).

The rules the CRD states in CEL (a path of type ``Exact`` or ``PathPrefix`` is an absolute,
normalised path; a Service backend names its port; filters agree with their ``type`` and do
not repeat; no redirect beside backends; at most 128 matches a route; a ``sectionName``
tells apart several refs to one parent; ...) are written here as Python predicates
(``x-sandbox-checks``, see ``sandbox.kube.validation``). The same schema serves ``v1`` and
``v1beta1``, as the CRD's two versions are one schema.

``GatewayApiValidator`` defaults and checks objects against this schema or, given
``crd_file``, against the ``openAPIV3Schema`` of each served version of a published CRD
(whose CEL rules the engine does not evaluate).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import yaml

from sandbox.kube.istio_schema import Schema, array, obj, string
from sandbox.kube.validation import FieldError, StructuralValidator, parse_duration_ns

GROUP = "gateway.networking.k8s.io"
VERSIONS = ("v1", "v1beta1")
KINDS = {"httproutes": "HTTPRoute"}

# The documented string formats.
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
GROUP_NAME = r"^$|^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
KIND_NAME = r"^[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?$"
HOSTNAME = r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
HEADER_NAME = r"^[A-Za-z0-9!#$%&'*+\-.^_\x60|~]+$"  # an RFC 7230 token
GATEWAY_DURATION = r"^([0-9]{1,5}(h|m|s|ms)){1,4}$"
CONTROLLER_NAME = (  # a domain, then a path
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
    r"\/[A-Za-z0-9\/\-._~%!$&'()*+,;=:]+$"
)
CONDITION_TYPE = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$"
)
CONDITION_REASON = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"
PATH_CHARACTERS = re.compile(r"^(?:[-A-Za-z0-9/._~!$&'()*+,;=:@]|[%][0-9a-fA-F]{2})+$")

MAX_RULES = 16
MAX_MATCHES_PER_RULE = 64
MAX_MATCHES = 128
MAX_BACKENDS = 16
MAX_WEIGHT = 1_000_000
METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH")
FILTER_FIELDS = {
    "RequestHeaderModifier": "requestHeaderModifier",
    "ResponseHeaderModifier": "responseHeaderModifier",
    "RequestMirror": "requestMirror",
    "RequestRedirect": "requestRedirect",
    "URLRewrite": "urlRewrite",
    "ExtensionRef": "extensionRef",
}
DEFAULT_MATCH = {"path": {"type": "PathPrefix", "value": "/"}}
Check = Callable[[Any], bool]


# --------------------------------------------------------------- builders
def checked(schema: Schema, *checks: tuple[Check, str]) -> Schema:
    """The schema with rules the CRD states in CEL, as (predicate, message) pairs."""
    return schema | {"x-sandbox-checks": [{"check": c, "message": m} for c, m in checks]}


def text(*, min_length: int | None = None, max_length: int, **extra: Any) -> Schema:
    out = string(maxLength=max_length, **extra)
    return out | ({"minLength": min_length} if min_length is not None else {})


def int32(**extra: Any) -> Schema:
    return {"type": "integer", "format": "int32", **extra}


def port_number() -> Schema:
    return int32(minimum=1, maximum=65535)


def enum(*values: str, **extra: Any) -> Schema:
    return {"type": "string", "enum": list(values), **extra}


def atomic(items: Schema, max_items: int, **extra: Any) -> Schema:
    return array(items, maxItems=max_items, **{"x-kubernetes-list-type": "atomic"}, **extra)


def keyed_by_name(items: Schema, max_items: int) -> Schema:
    return array(
        items,
        maxItems=max_items,
        **{"x-kubernetes-list-map-keys": ["name"], "x-kubernetes-list-type": "map"},
    )


def group_name(**extra: Any) -> Schema:
    return text(max_length=253, pattern=GROUP_NAME, **extra)


def kind_name(**extra: Any) -> Schema:
    return text(min_length=1, max_length=63, pattern=KIND_NAME, **extra)


def object_name() -> Schema:
    return text(min_length=1, max_length=253)


def namespace_name() -> Schema:
    return text(min_length=1, max_length=63, pattern=DNS_LABEL)


def section_name() -> Schema:
    return text(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN)


def precise_hostname() -> Schema:
    return text(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN)


def header_name() -> Schema:
    return text(min_length=1, max_length=256, pattern=HEADER_NAME)


# ------------------------------------------------------------ CEL-like rules
def _is_core_service(ref: dict[str, Any]) -> bool:
    return ref.get("group", "") == "" and ref.get("kind", "Service") == "Service"


def _service_has_port(ref: dict[str, Any]) -> bool:
    return not _is_core_service(ref) or "port" in ref


SERVICE_PORT = (_service_has_port, "a backend that is a Service must give its port")


def backend_ref(*, in_rule: bool) -> Schema:
    """A backendRef: of a rule (weighted, with filters of its own), or of a mirror."""
    fields: dict[str, Schema] = {
        "group": group_name(default=""),
        "kind": kind_name(default="Service"),
        "name": object_name(),
        "namespace": namespace_name(),
        "port": port_number(),
    }
    if in_rule:
        fields["filters"] = filters()
        fields["weight"] = int32(default=1, minimum=0, maximum=MAX_WEIGHT)
    return checked(obj(fields, required=["name"]), SERVICE_PORT)


def parent_ref() -> Schema:
    return obj(
        {
            "group": group_name(default=GROUP),
            "kind": kind_name(default="Gateway"),
            "name": object_name(),
            "namespace": namespace_name(),
            "port": port_number(),
            "sectionName": section_name(),
        },
        required=["name"],
    )


def _parent_key(ref: dict[str, Any]) -> tuple[Any, ...]:
    return (ref.get("group"), ref.get("kind"), ref.get("name"), ref.get("namespace") or "")


def _section_given_for_all_or_none(refs: list[dict[str, Any]]) -> bool:
    """Refs to one parent either all name a section or none does."""
    given: dict[tuple[Any, ...], set[bool]] = {}
    for ref in refs:
        given.setdefault(_parent_key(ref), set()).add(bool(ref.get("sectionName")))
    return all(len(kinds) == 1 for kinds in given.values())


def _refs_unique(refs: list[dict[str, Any]]) -> bool:
    keys = [(*_parent_key(ref), ref.get("sectionName") or "") for ref in refs]
    return len(keys) == len(set(keys))


def parent_refs() -> Schema:
    return checked(
        atomic(parent_ref(), 32),
        (
            _section_given_for_all_or_none,
            "several parentRefs to the same parent must each give a sectionName",
        ),
        (_refs_unique, "parentRefs to the same parent must differ in sectionName"),
    )


# ------------------------------------------------------------------ matches
def _exact_or_prefix(path: dict[str, Any]) -> bool:
    return path.get("type") in ("Exact", "PathPrefix")


def _path_rule(test: Check, message: str) -> tuple[Check, str]:
    def check(path: dict[str, Any]) -> bool:
        return not _exact_or_prefix(path) or test(path.get("value", ""))

    return check, f"{message} when type is Exact or PathPrefix"


PATH_RULES = (
    _path_rule(lambda v: v.startswith("/"), "value must be an absolute path starting with '/'"),
    *(
        _path_rule(lambda v, part=part: part not in v, f"value must not contain '{part}'")
        for part in ("//", "/./", "/../", "%2f", "%2F", "#")
    ),
    *(
        _path_rule(lambda v, end=end: not v.endswith(end), f"value must not end with '{end}'")
        for end in ("/..", "/.")
    ),
    (
        lambda p: p.get("type") in ("Exact", "PathPrefix", "RegularExpression"),
        "type must be Exact, PathPrefix or RegularExpression",
    ),
    _path_rule(
        lambda v: PATH_CHARACTERS.match(v) is not None,
        "value must hold only the characters of a URI path (or %-escapes)",
    ),
)


def path_match() -> Schema:
    schema = obj(
        {
            "type": enum("Exact", "PathPrefix", "RegularExpression", default="PathPrefix"),
            "value": string(default="/", maxLength=1024),
        }
    )
    return checked(schema | {"default": dict(DEFAULT_MATCH["path"])}, *PATH_RULES)


def value_match(max_value: int) -> Schema:
    return obj(
        {
            "name": header_name(),
            "type": enum("Exact", "RegularExpression", default="Exact"),
            "value": text(min_length=1, max_length=max_value),
        },
        required=["name", "value"],
    )


def route_match() -> Schema:
    return obj(
        {
            "headers": keyed_by_name(value_match(4096), 16),
            "method": enum(*METHODS),
            "path": path_match(),
            "queryParams": keyed_by_name(value_match(1024), 16),
        }
    )


# ------------------------------------------------------------------ filters
def header_modifier() -> Schema:
    pair = obj(
        {"name": header_name(), "value": text(min_length=1, max_length=4096)},
        required=["name", "value"],
    )
    return obj(
        {
            "add": keyed_by_name(pair, 16),
            "remove": array(string(), maxItems=16, **{"x-kubernetes-list-type": "set"}),
            "set": keyed_by_name(pair, 16),
        }
    )


def _both_or_neither(kind: str, field: str) -> tuple[tuple[Check, str], ...]:
    return (
        (
            lambda p: p.get("type") != kind or field in p,
            f"{field} must be given when type is {kind}",
        ),
        (lambda p: field not in p or p.get("type") == kind, f"{field} needs type {kind}"),
    )


def path_modifier() -> Schema:
    schema = obj(
        {
            "replaceFullPath": string(maxLength=1024),
            "replacePrefixMatch": string(maxLength=1024),
            "type": enum("ReplaceFullPath", "ReplacePrefixMatch"),
        },
        required=["type"],
    )
    return checked(
        schema,
        *_both_or_neither("ReplaceFullPath", "replaceFullPath"),
        *_both_or_neither("ReplacePrefixMatch", "replacePrefixMatch"),
    )


def request_mirror() -> Schema:
    fraction = checked(
        obj(
            {
                "denominator": int32(default=100, minimum=1),
                "numerator": int32(minimum=0),
            },
            required=["numerator"],
        ),
        (
            lambda f: f["numerator"] <= f.get("denominator", 100),
            "numerator may not exceed denominator",
        ),
    )
    schema = obj(
        {
            "backendRef": backend_ref(in_rule=False),
            "fraction": fraction,
            "percent": int32(minimum=0, maximum=100),
        },
        required=["backendRef"],
    )
    return checked(
        schema,
        (lambda m: not ("percent" in m and "fraction" in m), "give percent or fraction, not both"),
    )


def request_redirect() -> Schema:
    return obj(
        {
            "hostname": precise_hostname(),
            "path": path_modifier(),
            "port": port_number(),
            "scheme": enum("http", "https"),
            "statusCode": {"default": 302, "enum": [301, 302], "type": "integer"},
        }
    )


def url_rewrite() -> Schema:
    return obj({"hostname": precise_hostname(), "path": path_modifier()})


def _filter_field_rules() -> Iterable[tuple[Check, str]]:
    for kind, field in FILTER_FIELDS.items():
        yield (
            lambda f, kind=kind, field=field: field not in f or f.get("type") == kind,
            f"{field} is allowed only in a filter of type {kind}",
        )
        yield (
            lambda f, kind=kind, field=field: f.get("type") != kind or field in f,
            f"a filter of type {kind} needs {field}",
        )


def route_filter() -> Schema:
    schema = obj(
        {
            "extensionRef": obj(
                {"group": group_name(), "kind": kind_name(), "name": object_name()},
                required=["group", "kind", "name"],
            ),
            "requestHeaderModifier": header_modifier(),
            "requestMirror": request_mirror(),
            "requestRedirect": request_redirect(),
            "responseHeaderModifier": header_modifier(),
            "type": enum(*FILTER_FIELDS),
            "urlRewrite": url_rewrite(),
        },
        required=["type"],
    )
    return checked(schema, *_filter_field_rules())


def _count(filters: list[dict[str, Any]], kind: str) -> int:
    return sum(1 for f in filters if f.get("type") == kind)


def filters() -> Schema:
    once = ("RequestHeaderModifier", "ResponseHeaderModifier", "RequestRedirect", "URLRewrite")
    return checked(
        atomic(route_filter(), 16),
        (
            lambda fs: not (_count(fs, "RequestRedirect") and _count(fs, "URLRewrite")),
            "a RequestRedirect and a URLRewrite filter cannot be used together",
        ),
        *(
            (lambda fs, kind=kind: _count(fs, kind) <= 1, f"a {kind} filter may appear once")
            for kind in once
        ),
    )


# -------------------------------------------------------------------- rules
def _replaces_prefix(f: dict[str, Any], field: str) -> bool:
    path = (f.get(field) or {}).get("path") or {}
    return path.get("type") == "ReplacePrefixMatch" and "replacePrefixMatch" in path


def _one_prefix_match(rule: dict[str, Any]) -> bool:
    matches = rule.get("matches") or []
    return len(matches) == 1 and (matches[0].get("path") or {}).get("type") == "PathPrefix"


def _prefix_rewrite_rule(field: str, *, in_backends: bool) -> tuple[Check, str]:
    def uses(rule: dict[str, Any]) -> bool:
        def replacing(fs: list[dict[str, Any]]) -> bool:
            return sum(1 for f in fs if _replaces_prefix(f, field)) == 1

        if in_backends:
            refs = rule.get("backendRefs") or []
            return sum(1 for b in refs if replacing(b.get("filters") or [])) == 1
        return replacing(rule.get("filters") or [])

    where = "a backend's " if in_backends else "a "
    return (
        lambda rule: not uses(rule) or _one_prefix_match(rule),
        f"{where}{field} with path.replacePrefixMatch needs exactly one PathPrefix match",
    )


def _no_redirect_with_backends(rule: dict[str, Any]) -> bool:
    if not rule.get("backendRefs"):
        return True
    return all("requestRedirect" not in f for f in rule.get("filters") or [])


def _timeouts_ordered(timeouts: dict[str, Any]) -> bool:
    if "request" not in timeouts or "backendRequest" not in timeouts:
        return True
    request = parse_duration_ns(timeouts["request"])
    return request == 0 or parse_duration_ns(timeouts["backendRequest"]) <= request


def route_rule() -> Schema:
    schema = obj(
        {
            "backendRefs": atomic(backend_ref(in_rule=True), MAX_BACKENDS),
            "filters": filters(),
            "matches": atomic(route_match(), MAX_MATCHES_PER_RULE, default=[dict(DEFAULT_MATCH)]),
            "name": section_name(),
            "timeouts": checked(
                obj(
                    {
                        "backendRequest": string(pattern=GATEWAY_DURATION),
                        "request": string(pattern=GATEWAY_DURATION),
                    }
                ),
                (_timeouts_ordered, "the backendRequest timeout may not exceed the request one"),
            ),
        }
    )
    return checked(
        schema,
        (_no_redirect_with_backends, "a rule with backendRefs cannot have a RequestRedirect"),
        _prefix_rewrite_rule("requestRedirect", in_backends=False),
        _prefix_rewrite_rule("urlRewrite", in_backends=False),
        _prefix_rewrite_rule("requestRedirect", in_backends=True),
        _prefix_rewrite_rule("urlRewrite", in_backends=True),
    )


def _total_matches(rules: list[dict[str, Any]]) -> bool:
    return sum(len(r.get("matches") or []) for r in rules) <= MAX_MATCHES


def http_route_spec() -> Schema:
    return obj(
        {
            "hostnames": atomic(text(min_length=1, max_length=253, pattern=HOSTNAME), 16),
            "parentRefs": parent_refs(),
            "rules": checked(
                atomic(
                    route_rule(),
                    MAX_RULES,
                    default=[{"matches": [dict(DEFAULT_MATCH)]}],
                ),
                (_total_matches, f"a route may hold at most {MAX_MATCHES} matches in all"),
            ),
        }
    )


# -------------------------------------------------------------------- status
def status_schema() -> Schema:
    condition = obj(
        {
            "lastTransitionTime": string(format="date-time"),
            "message": string(maxLength=32768),
            "observedGeneration": {"format": "int64", "minimum": 0, "type": "integer"},
            "reason": text(min_length=1, max_length=1024, pattern=CONDITION_REASON),
            "status": enum("True", "False", "Unknown"),
            "type": string(maxLength=316, pattern=CONDITION_TYPE),
        },
        required=["lastTransitionTime", "message", "reason", "status", "type"],
    )
    parent = obj(
        {
            "conditions": array(
                condition,
                maxItems=8,
                minItems=1,
                **{"x-kubernetes-list-map-keys": ["type"], "x-kubernetes-list-type": "map"},
            ),
            "controllerName": text(min_length=1, max_length=253, pattern=CONTROLLER_NAME),
            "parentRef": parent_ref(),
        },
        required=["conditions", "controllerName", "parentRef"],
    )
    return obj({"parents": atomic(parent, 32)}, required=["parents"])


def resource_schema(kind: str = "HTTPRoute") -> Schema:
    if kind != "HTTPRoute":
        raise ValueError(f"no schema for {kind}")
    return obj(
        {
            "apiVersion": string(),
            "kind": string(),
            "metadata": {"type": "object"},
            "spec": http_route_spec(),
            "status": status_schema(),
        },
        required=["spec"],
    )


class GatewayApiValidator:
    """Defaults and validates Gateway API objects by plural and API version."""

    def __init__(self, crd_file: str | Path | None = None) -> None:
        self._validators: dict[tuple[str, str], StructuralValidator] = {}
        if crd_file is None:
            for plural, kind in KINDS.items():
                shared = StructuralValidator(resource_schema(kind))
                for version in VERSIONS:
                    self._validators[(plural, version)] = shared
        else:
            self._load_crd(Path(crd_file))
        self.source = str(crd_file) if crd_file else "built-in"

    def _load_crd(self, path: Path) -> None:
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc or doc.get("kind") != "CustomResourceDefinition":
                continue
            spec = doc["spec"]
            if spec.get("group") != GROUP or spec["names"]["plural"] not in KINDS:
                continue
            for version in spec["versions"]:
                if version.get("served", True):
                    schema = version["schema"]["openAPIV3Schema"]
                    key = (spec["names"]["plural"], version["name"])
                    self._validators[key] = StructuralValidator(schema)
        if not self._validators:
            raise ValueError(f"{path}: no CRD for {', '.join(sorted(KINDS))}")

    def versions(self, plural: str) -> list[str]:
        return [v for p, v in self._validators if p == plural]

    def apply_defaults(self, plural: str, version: str, obj: dict[str, Any]) -> None:
        validator = self._validators.get((plural, version))
        if validator is not None:
            validator.apply_defaults(obj)

    def errors(self, plural: str, version: str, obj: dict[str, Any]) -> list[FieldError]:
        validator = self._validators.get((plural, version))
        if validator is None:
            return [
                FieldError(
                    "apiVersion",
                    "FieldValueNotSupported",
                    f"{GROUP}/{version} is not served for {plural}",
                )
            ]
        return validator.errors(obj)
