"""The pure planner: plan + phase (+ what the cluster holds now) -> routing.

It is the one source of truth for routing states: `canary plan` prints them, the flow
applies them, rollback and resume derive from them. Nothing here talks to a cluster.

Routes the pipeline adds carry names starting with `canary-`; every other route is the
user's. Routes that send to the service host are split between stable and canary; all
other routes are left exactly as they were.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from canary.plan import HttpMatch, ReleasePlan

ISTIO_API_VERSION = "networking.istio.io/v1"
MANAGED_ROUTE_PREFIX = "canary-"
TEST_ROUTE = "canary-test"
HEADER_ROUTE = "canary-header"
ANNOTATION_PREFIX = "canary.release/"
RELEASE_ANNOTATION = ANNOTATION_PREFIX + "release-id"
PHASE_ANNOTATION = ANNOTATION_PREFIX + "phase"
ROLLED_BACK_PHASE = "rolled-back"  # the phase annotation of rollback routing


class PhaseKind(StrEnum):
    ISOLATE = "isolate"
    DEPLOY = "deploy"
    TEST = "test"
    HEADER_ROUTE = "header-route"
    STEP = "step"
    PROMOTE = "promote"
    CLEANUP = "cleanup"


@dataclass(frozen=True)
class Phase:
    name: str
    kind: PhaseKind
    canary_weight: int
    hold: float = 0.0
    step: int | None = None


@dataclass(frozen=True)
class Routing:
    virtual_service: dict[str, Any]
    destination_rule: dict[str, Any]


@dataclass(frozen=True)
class _Split:
    """How the split routes send traffic, and which match routes go to the canary."""

    canary_weight: int
    match_routes: list[tuple[str, list[dict[str, Any]]]] = field(default_factory=list)
    keep_stable_subset: bool = True
    keep_canary_subset: bool = True


def phases(plan: ReleasePlan) -> list[Phase]:
    """Every phase the plan goes through, in order."""
    out = [Phase("isolate", PhaseKind.ISOLATE, 0), Phase("deploy", PhaseKind.DEPLOY, 0)]
    if plan.tests.checks or plan.tests.commands:
        out.append(Phase("test", PhaseKind.TEST, 0))
    if plan.header_route is not None:
        out.append(Phase("header-route", PhaseKind.HEADER_ROUTE, 0, plan.header_route.hold))
    for index, step in enumerate(plan.weighted_steps(), start=1):
        out.append(Phase(f"step-{index}", PhaseKind.STEP, step.weight, plan.hold_of(step), index))
    out.append(Phase("promote", PhaseKind.PROMOTE, 100, plan.promotion.hold))
    out.append(Phase("cleanup", PhaseKind.CLEANUP, 100))
    return out


def phase_named(plan: ReleasePlan, name: str) -> Phase:
    for phase in phases(plan):
        if phase.name == name:
            return phase
    raise KeyError(f"the plan has no phase {name!r}")


def routing_for(
    plan: ReleasePlan,
    phase: Phase,
    release_id: str,
    current: Routing | None = None,
) -> Routing:
    """The VirtualService and DestinationRule a phase applies."""
    return _render(plan, _split_of(plan, phase, release_id), phase.name, release_id, current)


def rollback_routing(plan: ReleasePlan, release_id: str, current: Routing | None) -> Routing:
    """All traffic on stable, the pipeline's match routes and the canary subset gone."""
    split = _Split(canary_weight=0, keep_canary_subset=False)
    return _render(plan, split, ROLLED_BACK_PHASE, release_id, current)


def _split_of(plan: ReleasePlan, phase: Phase, release_id: str) -> _Split:
    if phase.kind is PhaseKind.TEST:
        test_match = [{"headers": {plan.tests.header: {"exact": release_id}}}]
        return _Split(0, [(TEST_ROUTE, test_match)])
    if phase.kind is PhaseKind.HEADER_ROUTE and plan.header_route is not None:
        return _Split(0, [(HEADER_ROUTE, [_istio_match(m) for m in plan.header_route.match])])
    if phase.kind is PhaseKind.CLEANUP:
        return _Split(100, keep_stable_subset=False)
    return _Split(phase.canary_weight)


def _istio_match(match: HttpMatch) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if match.headers:
        out["headers"] = {k: v.model_dump(exclude_none=True) for k, v in match.headers.items()}
    if match.uri is not None:
        out["uri"] = match.uri.model_dump(exclude_none=True)
    return out


# --- rendering -------------------------------------------------------------------------


def _render(
    plan: ReleasePlan, split: _Split, phase_name: str, release_id: str, current: Routing | None
) -> Routing:
    vs = _virtual_service(plan, split, current.virtual_service if current else None)
    dr = _destination_rule(plan, split, current.destination_rule if current else None)
    for obj in (vs, dr):
        annotations = obj["metadata"].setdefault("annotations", {})
        annotations[RELEASE_ANNOTATION] = release_id
        annotations[PHASE_ANNOTATION] = phase_name
    return Routing(vs, dr)


def _metadata(plan: ReleasePlan, name: str, current: dict[str, Any] | None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": plan.namespace}
    old = (current or {}).get("metadata", {})
    for key in ("labels", "annotations"):
        if old.get(key):
            meta[key] = copy.deepcopy(old[key])
    return meta


def _virtual_service(
    plan: ReleasePlan, split: _Split, current: dict[str, Any] | None
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
        {"name": name, "match": match, "route": [_destination(plan, plan.canary.version, None)]}
        for name, match in split.match_routes
    ]
    spec["http"] = managed + user_routes
    return {
        "apiVersion": ISTIO_API_VERSION,
        "kind": "VirtualService",
        "metadata": _metadata(plan, plan.virtual_service, current),
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


def is_managed_route(route: dict[str, Any]) -> bool:
    return str(route.get("name", "")).startswith(MANAGED_ROUTE_PREFIX)


def _weighted(plan: ReleasePlan, old: list[dict[str, Any]], split: _Split) -> list[dict[str, Any]]:
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
    plan: ReleasePlan, split: _Split, current: dict[str, Any] | None
) -> dict[str, Any]:
    spec = copy.deepcopy((current or {}).get("spec") or {"host": plan.host})
    ours = {plan.stable.version, plan.canary.version}
    subsets = [s for s in spec.get("subsets", []) if s.get("name") not in ours]
    if split.keep_stable_subset:
        subsets.append(_subset(plan, plan.stable.version, spec.get("subsets", [])))
    if split.keep_canary_subset:
        subsets.append(_subset(plan, plan.canary.version, spec.get("subsets", [])))
    spec["subsets"] = subsets
    return {
        "apiVersion": ISTIO_API_VERSION,
        "kind": "DestinationRule",
        "metadata": _metadata(plan, plan.destination_rule, current),
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


PLANNER_ANNOTATIONS = (RELEASE_ANNOTATION, PHASE_ANNOTATION)


def same_routing(desired: dict[str, Any], actual: dict[str, Any]) -> bool:
    """Whether the cluster holds what the planner said (spec and the planner's annotations).

    Other annotations (the release lease, users' own) may change meanwhile; they are not
    the planner's to compare.
    """
    if desired.get("spec") != actual.get("spec"):
        return False
    want = desired["metadata"].get("annotations", {})
    have = actual.get("metadata", {}).get("annotations") or {}
    return all(have.get(k) == want[k] for k in PLANNER_ANNOTATIONS if k in want)
