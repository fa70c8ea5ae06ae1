"""Istio routing states: one VirtualService and one DestinationRule (networking.istio.io/v1).

Routes that send to the service host are split between the stable and canary subsets; the
pipeline's match routes go first; every other route is left exactly as it was.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from canary.plan import HttpMatch, ReleasePlan
from canary.planner.objects import annotate, metadata
from canary.planner.phases import Split, is_managed_route

ISTIO_API_VERSION = "networking.istio.io/v1"


@dataclass(frozen=True)
class Routing:
    """Istio's routing state: the VirtualService and its DestinationRule."""

    virtual_service: dict[str, Any]
    destination_rule: dict[str, Any]

    @property
    def route(self) -> dict[str, Any]:
        """The object holding the routes (and the release's lease): the VirtualService."""
        return self.virtual_service

    def canary_weight(self, plan: ReleasePlan) -> int:
        return canary_weight(plan, self.virtual_service)

    def managed_route_names(self) -> list[str]:
        return managed_route_names(self.virtual_service)

    def documents(self) -> dict[str, Any]:
        return {"virtualService": self.virtual_service, "destinationRule": self.destination_rule}


def render(
    plan: ReleasePlan, split: Split, phase_name: str, release_id: str, current: Routing | None
) -> Routing:
    vs = _virtual_service(plan, split, current.virtual_service if current else None)
    dr = _destination_rule(plan, split, current.destination_rule if current else None)
    for obj in (vs, dr):
        annotate(obj, release_id, phase_name)
    return Routing(vs, dr)


def unrouted(plan: ReleasePlan) -> dict[str, Any]:
    """A VirtualService that routes as the Service alone does (no subsets yet)."""
    host = plan.host
    return {
        "apiVersion": ISTIO_API_VERSION,
        "kind": "VirtualService",
        "metadata": {"name": plan.virtual_service, "namespace": plan.namespace},
        "spec": {"hosts": [host], "http": [{"route": [{"destination": {"host": host}}]}]},
    }


def istio_match(match: HttpMatch) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if match.headers:
        out["headers"] = {k: v.model_dump(exclude_none=True) for k, v in match.headers.items()}
    if match.uri is not None:
        out["uri"] = match.uri.model_dump(exclude_none=True)
    return out


def _virtual_service(
    plan: ReleasePlan, split: Split, current: dict[str, Any] | None
) -> dict[str, Any]:
    spec = copy.deepcopy((current or {}).get("spec") or {"hosts": [plan.host]})
    user_routes = [r for r in spec.get("http", []) if not is_managed_route(r)]
    split_indexes = _split_route_indexes(plan, user_routes)
    if not split_indexes:
        user_routes.append({})
        split_indexes = [len(user_routes) - 1]
    for index in split_indexes:
        user_routes[index]["route"] = _weighted(plan, user_routes[index].get("route", []), split)
    managed = [
        {
            "name": name,
            "match": [istio_match(m) for m in matches],
            "route": [_destination(plan, plan.canary.version, None)],
        }
        for name, matches in split.match_routes
    ]
    spec["http"] = managed + user_routes
    return {
        "apiVersion": ISTIO_API_VERSION,
        "kind": "VirtualService",
        "metadata": metadata(plan, plan.virtual_service, current),
        "spec": spec,
    }


def _split_route_indexes(plan: ReleasePlan, routes: list[dict[str, Any]]) -> list[int]:
    if plan.routing.routes:
        return [i for i, r in enumerate(routes) if r.get("name") in plan.routing.routes]
    return [i for i, r in enumerate(routes) if _sends_to_host(plan, r)]


def _sends_to_host(plan: ReleasePlan, route: dict[str, Any]) -> bool:
    return any(
        names_host(plan, d.get("destination", {}).get("host", "")) for d in route.get("route", [])
    )


def names_host(plan: ReleasePlan, host: str) -> bool:
    """Whether a destination host is the plan's service (short or fully qualified)."""
    short = plan.host
    qualified = {short, f"{short}.{plan.namespace}", f"{short}.{plan.namespace}.svc"}
    qualified.add(f"{short}.{plan.namespace}.svc.cluster.local")
    return host in qualified


def _weighted(plan: ReleasePlan, old: list[dict[str, Any]], split: Split) -> list[dict[str, Any]]:
    port = next((d["destination"]["port"] for d in old if "port" in d.get("destination", {})), None)
    stable = _destination(plan, plan.stable.version, port)
    canary = _destination(plan, plan.canary.version, port)
    if split.canary_weight <= 0:
        return [stable]
    if split.canary_weight >= 100:
        return [canary]
    stable["weight"] = 100 - split.canary_weight
    canary["weight"] = split.canary_weight
    return [stable, canary]


def _destination(plan: ReleasePlan, subset: str, port: Any) -> dict[str, Any]:
    destination: dict[str, Any] = {"host": plan.host, "subset": subset}
    if port is not None:
        destination["port"] = copy.deepcopy(port)
    return {"destination": destination}


def _destination_rule(
    plan: ReleasePlan, split: Split, current: dict[str, Any] | None
) -> dict[str, Any]:
    spec = copy.deepcopy((current or {}).get("spec") or {"host": plan.host})
    ours = {plan.stable.version, plan.canary.version}
    subsets = [s for s in spec.get("subsets", []) if s.get("name") not in ours]
    if split.keep_stable:
        subsets.append(_subset(plan, plan.stable.version, spec.get("subsets", [])))
    if split.keep_canary:
        subsets.append(_subset(plan, plan.canary.version, spec.get("subsets", [])))
    spec["subsets"] = subsets
    return {
        "apiVersion": ISTIO_API_VERSION,
        "kind": "DestinationRule",
        "metadata": metadata(plan, plan.destination_rule, current),
        "spec": spec,
    }


def _subset(plan: ReleasePlan, version: str, existing: list[dict[str, Any]]) -> dict[str, Any]:
    """The subset for a version; an existing one keeps its traffic policy."""
    subset = next((copy.deepcopy(s) for s in existing if s.get("name") == version), {})
    subset["name"] = version
    subset["labels"] = {plan.routing.version_label: version}
    return subset


# --- reading routing back ----------------------------------------------------------------


def canary_weight(plan: ReleasePlan, virtual_service: dict[str, Any]) -> int:
    """The canary's share of the split routes' traffic, in percent."""
    routes = [r for r in virtual_service.get("spec", {}).get("http", []) if not is_managed_route(r)]
    shares = [_route_canary_share(plan, routes[i]) for i in _split_route_indexes(plan, routes)]
    return round(sum(shares) / len(shares)) if shares else 0


def _route_canary_share(plan: ReleasePlan, route: dict[str, Any]) -> float:
    destinations = route.get("route", [])
    weights = [100] if len(destinations) == 1 else [d.get("weight", 0) for d in destinations]
    total = sum(weights) or 1
    canary = sum(
        w
        for d, w in zip(destinations, weights, strict=True)
        if d.get("destination", {}).get("subset") == plan.canary.version
    )
    return 100.0 * canary / total


def managed_route_names(virtual_service: dict[str, Any]) -> list[str]:
    return [
        r.get("name", "")
        for r in virtual_service.get("spec", {}).get("http", [])
        if is_managed_route(r)
    ]
