"""The Gateway API's HTTPRoutes that bind to a Service (the mesh's "GAMMA" routes).

An HTTPRoute whose ``parentRefs`` name a Service (``kind: Service``, group ``""``) routes the
mesh's requests for that Service; a route whose parents are Gateways only is not the mesh's
and is ignored here. For the router (``sandbox.mesh.routing``) each route becomes one
``GatewayRule`` per match of each rule, ordered as the Gateway API orders them:

1. an ``Exact`` path first, then a ``RegularExpression``, then a ``PathPrefix`` (Istio's
   order; the API leaves the rank of regular expressions to implementations), a longer
   value before a shorter one;
2. then a ``method`` match before none;
3. then more header matches, then more query parameter matches;
4. ties go to the oldest route (``creationTimestamp``), then to ``namespace/name`` in
   alphabetical order, then to the rule and match order within the route.

A rule without ``matches`` matches every request (path prefix ``/``). A path prefix matches
whole path segments (``/foo`` matches ``/foo`` and ``/foo/bar``, not ``/foobar``); regular
expressions must match the whole value. Header names are case-insensitive.

``backendRefs`` name Services (``kind`` defaults to Service), in the route's namespace
unless they say otherwise (ReferenceGrants are not checked); ``weight`` defaults to 1 and
is relative, and a backend of weight 0 gets nothing. Filters and timeouts are not emulated.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

ServiceKey = tuple[str, str]  # (namespace, name)
Predicate = Callable[[Any], bool]  # over sandbox.mesh.routing.Request
_PATH_RANK = {"Exact": 0, "RegularExpression": 1, "PathPrefix": 2}


@dataclass(frozen=True)
class Backend:
    """A backendRef: the Service it names (None when it names something else)."""

    service: ServiceKey | None
    weight: float


@dataclass(frozen=True)
class GatewayRule:
    """One match of one rule of an HTTPRoute, bound to one parent Service."""

    name: str  # namespace/route#rule
    predicate: Predicate
    backends: tuple[Backend, ...]
    spec: dict[str, Any]  # the rule as written, for descriptions of the table


def mesh_rules(http_routes: Iterable[Mapping[str, Any]]) -> dict[ServiceKey, list[GatewayRule]]:
    """Per parent Service, its rules' matches in the order the router must try them."""
    ranked: dict[ServiceKey, list[tuple[tuple[Any, ...], GatewayRule]]] = {}
    for route in http_routes:
        meta, spec = route.get("metadata") or {}, route.get("spec") or {}
        ns, name = meta.get("namespace") or "default", meta.get("name", "")
        parents = sorted(
            {
                parent
                for ref in spec.get("parentRefs") or []
                if (parent := _parent(ref, ns)) is not None
            }
        )
        for rule_index, rule in enumerate(spec.get("rules") or []):
            backends = tuple(_backend(ref, ns) for ref in rule.get("backendRefs") or [])
            for match_index, match in enumerate(rule.get("matches") or [{}]):
                tie = (meta.get("creationTimestamp") or "", f"{ns}/{name}", rule_index, match_index)
                entry = GatewayRule(
                    f"{ns}/{name}#{rule_index}", _predicate(match), backends, dict(rule)
                )
                for parent in parents:
                    ranked.setdefault(parent, []).append((_specificity(match) + tie, entry))
    return {
        svc: [rule for _, rule in sorted(entries, key=lambda e: e[0])]
        for svc, entries in ranked.items()
    }


def _parent(ref: Mapping[str, Any], namespace: str) -> ServiceKey | None:
    if ref.get("kind") != "Service" or ref.get("group", "") not in ("", "core"):
        return None
    return ref.get("namespace") or namespace, ref.get("name", "")


def _backend(ref: Mapping[str, Any], namespace: str) -> Backend:
    weight = float(ref.get("weight", 1))
    if ref.get("kind", "Service") != "Service" or ref.get("group", "") not in ("", "core"):
        return Backend(None, weight)
    return Backend((ref.get("namespace") or namespace, ref.get("name", "")), weight)


def _path(match: Mapping[str, Any]) -> tuple[str, str]:
    path = match.get("path") or {}
    return path.get("type", "PathPrefix"), str(path.get("value", "/"))


def _specificity(match: Mapping[str, Any]) -> tuple[int, int, int, int, int]:
    """The precedence of a match: smaller sorts first."""
    kind, value = _path(match)
    length = 0 if kind == "RegularExpression" else len(value.rstrip("/") or "/")
    return (
        _PATH_RANK.get(kind, 2),
        -length,
        0 if match.get("method") else 1,
        -len(match.get("headers") or []),
        -len(match.get("queryParams") or []),
    )


def _value_test(kind: str, want: str) -> Callable[[str | None], bool]:
    if kind == "RegularExpression":
        pattern = re.compile(want)
        return lambda value: value is not None and pattern.fullmatch(value) is not None
    return lambda value: value == want


def _path_test(kind: str, want: str) -> Callable[[str], bool]:
    if kind == "PathPrefix":
        prefix = want.rstrip("/")
        return lambda uri: not prefix or uri == prefix or uri.startswith(prefix + "/")
    return _value_test(kind, want)  # type: ignore[return-value]


def _predicate(match: Mapping[str, Any]) -> Predicate:
    """The AND of one HTTPRouteMatch's conditions."""
    path_test = _path_test(*_path(match))
    tests: list[Predicate] = [lambda r: path_test(r.uri)]
    for header in match.get("headers") or []:
        key, test = (
            header["name"].lower(),
            _value_test(header.get("type", "Exact"), str(header.get("value", ""))),
        )
        tests.append(lambda r, k=key, t=test: t(r.headers.get(k)))
    for param in match.get("queryParams") or []:
        key, test = (
            param["name"],
            _value_test(param.get("type", "Exact"), str(param.get("value", ""))),
        )
        tests.append(lambda r, k=key, t=test: t(r.query.get(k)))
    if match.get("method"):
        method = str(match["method"]).upper()
        tests.append(lambda r: r.method == method)
    return lambda r: all(test(r) for test in tests)
