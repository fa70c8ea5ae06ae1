"""Istio routing: one VirtualService and one DestinationRule at networking.istio.io/v1.

Writes are make-before-break: first the DestinationRule with the subsets of both the old
and the new state, then the VirtualService, then the final DestinationRule. At no point
does a route name a subset the DestinationRule lacks (Istio would answer 503 NC).
"""

from __future__ import annotations

import copy
from typing import Any

from kubernetes import client as k8s

from canary.planner import Routing, same_routing
from canary.routing import RouteObject, RoutingMismatch
from canary.routing.custom_objects import CustomObjectRouter

GROUP = "networking.istio.io"
VERSION = "v1"
VIRTUAL_SERVICES = "virtualservices"
DESTINATION_RULES = "destinationrules"


class IstioRouter(CustomObjectRouter):
    group = GROUP
    version = VERSION

    def __init__(
        self,
        api: k8s.ApiClient,
        namespace: str,
        virtual_service: str,
        destination_rule: str,
        *,
        retry_timeout: float = 30.0,
    ):
        super().__init__(api, namespace, retry_timeout=retry_timeout)
        self.virtual_service = virtual_service
        self.destination_rule = destination_rule

    def route_object(self) -> RouteObject:
        return RouteObject(
            GROUP, VERSION, VIRTUAL_SERVICES, "VirtualService", self.namespace, self.virtual_service
        )

    def get_routes(self) -> Routing | None:
        vs = self._read(VIRTUAL_SERVICES, self.virtual_service)
        dr = self._read(DESTINATION_RULES, self.destination_rule)
        if vs is None and dr is None:
            return None
        return Routing(vs or {}, dr or {})

    def set_routes(self, routing: Routing) -> None:
        current = self.get_routes()
        if current is not None and _holds(current, routing):
            return
        old_dr = current.destination_rule if current else {}
        self._apply(DESTINATION_RULES, with_all_subsets(routing.destination_rule, old_dr))
        self._apply(VIRTUAL_SERVICES, routing.virtual_service)
        self._apply(DESTINATION_RULES, routing.destination_rule)
        self.verify(routing)

    def verify(self, routing: Routing) -> None:
        """Raise RoutingMismatch unless the cluster holds `routing`."""
        actual = self.get_routes()
        if actual is None or not _holds(actual, routing):
            kinds = _mismatched(actual, routing)
            raise RoutingMismatch(
                f"{' and '.join(kinds)} in namespace {self.namespace} read back different "
                "from what was written (changed by someone else, or by an admission webhook)"
            )


def with_all_subsets(desired: dict[str, Any], current: dict[str, Any]) -> dict[str, Any]:
    """The desired DestinationRule, also keeping every subset `current` has."""
    merged = copy.deepcopy(desired)
    subsets = merged["spec"].setdefault("subsets", [])
    names = {s.get("name") for s in subsets}
    old = (current or {}).get("spec", {}).get("subsets") or []
    subsets.extend(copy.deepcopy(s) for s in old if s.get("name") not in names)
    return merged


def _holds(actual: Routing, desired: Routing) -> bool:
    return not _mismatched(actual, desired)


def _mismatched(actual: Routing | None, desired: Routing) -> list[str]:
    kinds = []
    if actual is None or not same_routing(desired.virtual_service, actual.virtual_service):
        kinds.append(f"VirtualService {desired.virtual_service['metadata']['name']}")
    if actual is None or not same_routing(desired.destination_rule, actual.destination_rule):
        kinds.append(f"DestinationRule {desired.destination_rule['metadata']['name']}")
    return kinds
