"""The pure planner: plan + phase (+ what the cluster holds now) -> routing.

It is the one source of truth for routing states: `canary plan` prints them, the flow
applies them, rollback and resume derive from them. Nothing here talks to a cluster.

`phases` says which phases a plan has and how each splits traffic, for any traffic API;
`istio` renders that as a VirtualService and DestinationRule, `gateway_api` as an HTTPRoute
and one Service per version; the plan's `routing.provider` picks one. Routes the pipeline
adds carry names starting with `canary-`; every other route is the user's.
"""

from __future__ import annotations

from typing import Any, Protocol

from canary.plan import ReleasePlan
from canary.plan.model import GATEWAY_API
from canary.planner import gateway_api, istio
from canary.planner.gateway_api import HttpRouteRouting
from canary.planner.istio import (
    ISTIO_API_VERSION,
    Routing,
    canary_weight,
    managed_route_names,
    names_host,
)
from canary.planner.objects import (
    ANNOTATION_PREFIX,
    PHASE_ANNOTATION,
    PLANNER_ANNOTATIONS,
    RELEASE_ANNOTATION,
    ROLLED_BACK_PHASE,
    same_routing,
)
from canary.planner.phases import (
    HEADER_ROUTE,
    MANAGED_ROUTE_PREFIX,
    ROLLBACK_SPLIT,
    TEST_ROUTE,
    Phase,
    PhaseKind,
    Split,
    is_managed_route,
    phase_named,
    phases,
    split_of,
)

__all__ = [
    "ANNOTATION_PREFIX",
    "HEADER_ROUTE",
    "ISTIO_API_VERSION",
    "MANAGED_ROUTE_PREFIX",
    "PHASE_ANNOTATION",
    "PLANNER_ANNOTATIONS",
    "RELEASE_ANNOTATION",
    "ROLLED_BACK_PHASE",
    "TEST_ROUTE",
    "HttpRouteRouting",
    "Phase",
    "PhaseKind",
    "Routing",
    "RoutingState",
    "canary_weight",
    "is_managed_route",
    "managed_route_names",
    "names_host",
    "phase_named",
    "phases",
    "rollback_routing",
    "routing_for",
    "same_routing",
    "unrouted",
]


class RoutingState(Protocol):
    """One routing state of one traffic API (`Routing` for Istio, `HttpRouteRouting`)."""

    @property
    def route(self) -> dict[str, Any]:
        """The object that holds the routes; the release's lease and phase live on it."""
        ...

    def canary_weight(self, plan: ReleasePlan) -> int:
        """The canary's share of the split routes' traffic, in percent."""
        ...

    def managed_route_names(self) -> list[str]:
        """The pipeline's own match routes (canary-test, canary-header) in the state."""
        ...

    def documents(self) -> dict[str, Any]:
        """The state's objects by kind, as `canary plan -o yaml` prints them."""
        ...


class TrafficApi(Protocol):
    """How one traffic API renders a split (the modules `istio` and `gateway_api`)."""

    def render(
        self, plan: ReleasePlan, split: Split, phase_name: str, release_id: str, current: Any
    ) -> RoutingState: ...

    def unrouted(self, plan: ReleasePlan) -> dict[str, Any]: ...


def routing_for(
    plan: ReleasePlan,
    phase: Phase,
    release_id: str,
    current: RoutingState | None = None,
) -> RoutingState:
    """The routing state a phase applies, in the plan's traffic API.

    `current` is what the cluster holds now, in the same API (its routes are kept).
    """
    split = split_of(plan, phase, release_id)
    return _traffic_api(plan).render(plan, split, phase.name, release_id, current)


def rollback_routing(
    plan: ReleasePlan, release_id: str, current: RoutingState | None
) -> RoutingState:
    """All traffic on stable, the pipeline's match routes and the canary's destination gone."""
    return _traffic_api(plan).render(plan, ROLLBACK_SPLIT, ROLLED_BACK_PHASE, release_id, current)


def unrouted(plan: ReleasePlan) -> dict[str, Any]:
    """The route object as it is before any release: routing as the Service alone does."""
    return _traffic_api(plan).unrouted(plan)


def _traffic_api(plan: ReleasePlan) -> TrafficApi:
    return gateway_api if plan.routing.provider == GATEWAY_API else istio
