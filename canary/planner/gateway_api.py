"""Gateway API routing states: one HTTPRoute whose parent is the Service itself (a mesh
route, the GAMMA way) and one Service per version as its backends.

The HTTPRoute's rules that send to the service (its own Service or a version's) are split
between the stable and canary Services; the pipeline's match rules, named `canary-*`, send
to the canary. Every other rule, and every other field of a split rule (matches, filters,
timeouts), is left as it was.

Unlike Istio's routes, HTTPRoute rules are not tried in order: the most specific match wins
(exact path, then the longest path prefix, then method, then the most header matches). So a
match rule takes each split rule's matches and adds its headers: it is then more specific
than the split rule it narrows, whatever that rule's path.

What is written is the CRD's defaulted form (`group`, `kind`, `weight`, the default path
match and header match type written out), so that an API server's answer, defaults
applied, reads back equal to it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from canary.errors import CanaryError
from canary.plan import HttpMatch, ReleasePlan
from canary.plan.model import StringMatch
from canary.planner.objects import RELEASE_ANNOTATION, annotate, metadata
from canary.planner.phases import Split, is_managed_route

GROUP = "gateway.networking.k8s.io"
API_VERSION = f"{GROUP}/v1"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "canary-release"
# The CRD's bounds on a route.
MAX_RULES = 16
MAX_MATCHES_PER_RULE = 64
MAX_MATCHES = 128
DEFAULT_PATH = {"type": "PathPrefix", "value": "/"}
_HEADER_TYPES = {"exact": "Exact", "regex": "RegularExpression"}
_PATH_TYPES = {"exact": "Exact", "prefix": "PathPrefix", "regex": "RegularExpression"}


class UnwritableRoute(CanaryError):
    """The HTTPRoute would break the Gateway API's rules (its bounds, its filters)."""


@dataclass(frozen=True)
class HttpRouteRouting:
    """The Gateway API routing state: the HTTPRoute, and the per-version Services it needs.

    `services` are the Services the state needs to exist: created (with the release's id
    in their annotations) when missing. A Service the release created that a later state
    no longer lists is deleted once no rule names it; no other Service is ever deleted.
    """

    http_route: dict[str, Any]
    services: tuple[dict[str, Any], ...] = ()

    @property
    def route(self) -> dict[str, Any]:
        """The object holding the routes (and the release's lease): the HTTPRoute."""
        return self.http_route

    @property
    def release_id(self) -> str | None:
        notes = self.http_route.get("metadata", {}).get("annotations") or {}
        return notes.get(RELEASE_ANNOTATION)

    def service_names(self) -> list[str]:
        return [s["metadata"]["name"] for s in self.services]

    def canary_weight(self, plan: ReleasePlan) -> int:
        return canary_weight(plan, self.http_route)

    def managed_route_names(self) -> list[str]:
        return managed_rule_names(self.http_route)

    def documents(self) -> dict[str, Any]:
        return {"httpRoute": self.http_route, "services": list(self.services)}


def render(
    plan: ReleasePlan,
    split: Split,
    phase_name: str,
    release_id: str,
    current: HttpRouteRouting | None,
) -> HttpRouteRouting:
    route = _http_route(plan, split, current.http_route if current else None)
    annotate(route, release_id, phase_name)
    named = set(backend_names(route))
    versions = [
        (plan.stable_service, plan.stable.version, split.keep_stable),
        (plan.canary_service, plan.canary.version, split.keep_canary),
    ]
    services = tuple(
        version_service(plan, name, version, release_id)
        for name, version, kept in versions
        if kept or name in named  # a rule the user keeps may still name it
    )
    return HttpRouteRouting(route, services)


def unrouted(plan: ReleasePlan) -> dict[str, Any]:
    """An HTTPRoute that routes as the Service alone does: to the Service itself."""
    rule = {
        "matches": [{"path": dict(DEFAULT_PATH)}],
        "backendRefs": [_backend(plan.service, _port(plan), 100)],
    }
    return {
        "apiVersion": API_VERSION,
        "kind": "HTTPRoute",
        "metadata": {"name": plan.http_route, "namespace": plan.namespace},
        "spec": {"parentRefs": [parent_ref(plan)], "rules": [rule]},
    }


def parent_ref(plan: ReleasePlan) -> dict[str, Any]:
    """The Service itself as the route's parent; the core group is written out (its
    default, gateway.networking.k8s.io, would name another kind of Service)."""
    return {"group": "", "kind": "Service", "name": plan.service, "port": _port(plan)}


def _port(plan: ReleasePlan) -> int:
    """The Service port (a gateway-api plan always gives one: the plan model sees to it)."""
    if plan.routing.port is None:
        raise ValueError(f"plan of {plan.service} has no routing.port")
    return plan.routing.port


def version_service(plan: ReleasePlan, name: str, version: str, release_id: str) -> dict[str, Any]:
    """The Service of one version: the service's pods (`app`) of that version only."""
    selector = {"app": plan.service, plan.routing.version_label: version}
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": name,
            "namespace": plan.namespace,
            "labels": {MANAGED_BY_LABEL: MANAGED_BY},
            "annotations": {RELEASE_ANNOTATION: release_id},
        },
        "spec": {"selector": selector, "ports": [{"name": "http", "port": _port(plan)}]},
    }


# --- the HTTPRoute -----------------------------------------------------------------------


def _http_route(plan: ReleasePlan, split: Split, current: dict[str, Any] | None) -> dict[str, Any]:
    spec = copy.deepcopy((current or {}).get("spec") or {"parentRefs": [parent_ref(plan)]})
    parents = spec.setdefault("parentRefs", [])
    if not any(_is_service_parent(plan, p) for p in parents):
        parents.append(parent_ref(plan))
    user_rules = [r for r in spec.get("rules") or [] if not is_managed_route(r)]
    split_indexes = _split_rule_indexes(plan, user_rules)
    if not split_indexes:
        user_rules.append({"matches": [{"path": dict(DEFAULT_PATH)}]})
        split_indexes = [len(user_rules) - 1]
    split_rules = [user_rules[i] for i in split_indexes]
    _check_splittable(plan, split_rules)
    port = _port_of(plan, split_rules)
    for rule in split_rules:
        rule["backendRefs"] = _weighted(plan, port, split)
    managed = [
        {
            "name": name,
            "matches": _narrowing(matches, split_rules),
            "backendRefs": [_backend(plan.canary_service, port, 100)],
        }
        for name, matches in split.match_routes
    ]
    spec["rules"] = managed + user_rules
    _check_bounds(plan, spec["rules"])
    return {
        "apiVersion": API_VERSION,
        "kind": "HTTPRoute",
        "metadata": metadata(plan, plan.http_route, current),
        "spec": spec,
    }


def _is_service_parent(plan: ReleasePlan, parent: dict[str, Any]) -> bool:
    return parent.get("kind") == "Service" and parent.get("name") == plan.service


def _split_rule_indexes(plan: ReleasePlan, rules: list[dict[str, Any]]) -> list[int]:
    if plan.routing.routes:
        return [i for i, r in enumerate(rules) if r.get("name") in plan.routing.routes]
    return [i for i, r in enumerate(rules) if _sends_to_service(plan, r)]


def _sends_to_service(plan: ReleasePlan, rule: dict[str, Any]) -> bool:
    ours = {plan.service, plan.stable_service, plan.canary_service}
    return any(_is_service(b) and b.get("name") in ours for b in rule.get("backendRefs") or [])


def _is_service(backend: dict[str, Any]) -> bool:
    return backend.get("group", "") == "" and backend.get("kind", "Service") == "Service"


def _port_of(plan: ReleasePlan, rules: list[dict[str, Any]]) -> int:
    """The port the split rules send to (the plan's, unless a rule names another)."""
    ours = {plan.service, plan.stable_service, plan.canary_service}
    for rule in rules:
        for backend in rule.get("backendRefs") or []:
            if _is_service(backend) and backend.get("name") in ours and "port" in backend:
                return int(backend["port"])
    return _port(plan)


def _weighted(plan: ReleasePlan, port: int, split: Split) -> list[dict[str, Any]]:
    if split.canary_weight <= 0:
        return [_backend(plan.stable_service, port, 100)]
    if split.canary_weight >= 100:
        return [_backend(plan.canary_service, port, 100)]
    return [
        _backend(plan.stable_service, port, 100 - split.canary_weight),
        _backend(plan.canary_service, port, split.canary_weight),
    ]


def _backend(name: str, port: int, weight: int) -> dict[str, Any]:
    return {"group": "", "kind": "Service", "name": name, "port": port, "weight": weight}


def _narrowing(matches: list[HttpMatch], split_rules: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The route matches of a match rule: each plan match within each split rule's matches.

    A plan match with a uri stands alone (its path decides where it applies).
    """
    scopes: list[dict[str, Any]] = []
    for rule in split_rules:
        for scope in rule.get("matches") or [{"path": dict(DEFAULT_PATH)}]:
            if scope not in scopes:
                scopes.append(scope)
    out: list[dict[str, Any]] = []
    for match in matches:
        headers = _headers(match)
        if match.uri is not None:
            narrowed = [{"path": _path(match.uri), **({"headers": headers} if headers else {})}]
        else:
            narrowed = [_with_headers(scope, headers) for scope in scopes]
        out += [m for m in narrowed if m not in out]
    return out


def _headers(match: HttpMatch) -> list[dict[str, str]]:
    out = []
    for name, value in match.headers.items():
        kind = "exact" if value.exact is not None else "regex"
        out.append({"name": name, "type": _HEADER_TYPES[kind], "value": getattr(value, kind)})
    return out


def _path(uri: StringMatch) -> dict[str, str]:
    kind = next(k for k in _PATH_TYPES if getattr(uri, k) is not None)
    return {"type": _PATH_TYPES[kind], "value": getattr(uri, kind)}


def _with_headers(scope: dict[str, Any], headers: list[dict[str, str]]) -> dict[str, Any]:
    """The split rule's match with the plan's headers added (the plan's win a name clash)."""
    narrowed = copy.deepcopy(scope)
    narrowed.setdefault("path", dict(DEFAULT_PATH))
    ours = {h["name"].lower() for h in headers}
    kept = [h for h in narrowed.get("headers") or [] if h.get("name", "").lower() not in ours]
    narrowed["headers"] = kept + copy.deepcopy(headers)
    return narrowed


def _check_splittable(plan: ReleasePlan, rules: list[dict[str, Any]]) -> None:
    """A redirecting rule has no backends to split (the CRD refuses both together)."""
    for rule in rules:
        if any(f.get("type") == "RequestRedirect" for f in rule.get("filters") or []):
            name = rule.get("name", "without a name")
            raise UnwritableRoute(
                f"HTTPRoute {plan.namespace}/{plan.http_route}: rule {name} redirects, so it "
                "cannot be split; leave it out of routing.routes"
            )


def _check_bounds(plan: ReleasePlan, rules: list[dict[str, Any]]) -> None:
    where = f"HTTPRoute {plan.namespace}/{plan.http_route}"
    if len(rules) > MAX_RULES:
        raise UnwritableRoute(
            f"{where} would hold {len(rules)} rules with the pipeline's; the Gateway API "
            f"allows {MAX_RULES}"
        )
    counts = [len(r.get("matches") or [None]) for r in rules]
    if max(counts) > MAX_MATCHES_PER_RULE or sum(counts) > MAX_MATCHES:
        raise UnwritableRoute(
            f"{where} would hold {sum(counts)} matches ({max(counts)} in one rule) with the "
            f"pipeline's; the Gateway API allows {MAX_MATCHES} ({MAX_MATCHES_PER_RULE} a rule)"
        )


# --- reading routing back ----------------------------------------------------------------


def canary_weight(plan: ReleasePlan, http_route: dict[str, Any]) -> int:
    """The canary's share of the split rules' traffic, in percent (weights are relative)."""
    rules = [r for r in http_route.get("spec", {}).get("rules") or [] if not is_managed_route(r)]
    shares = [_rule_canary_share(plan, rules[i]) for i in _split_rule_indexes(plan, rules)]
    return round(sum(shares) / len(shares)) if shares else 0


def _rule_canary_share(plan: ReleasePlan, rule: dict[str, Any]) -> float:
    backends = rule.get("backendRefs") or []
    weights = [int(b.get("weight", 1)) for b in backends]
    total = sum(weights) or 1
    canary = sum(
        w
        for b, w in zip(backends, weights, strict=True)
        if _is_service(b) and b.get("name") == plan.canary_service
    )
    return 100.0 * canary / total


def managed_rule_names(http_route: dict[str, Any]) -> list[str]:
    return [
        r.get("name", "")
        for r in http_route.get("spec", {}).get("rules") or []
        if is_managed_route(r)
    ]


def backend_names(http_route: dict[str, Any]) -> list[str]:
    """The Services any rule of the route sends to."""
    return [
        b["name"]
        for r in http_route.get("spec", {}).get("rules") or []
        for b in r.get("backendRefs") or []
        if _is_service(b) and "name" in b
    ]
