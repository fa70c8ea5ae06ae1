"""Istio routing: one VirtualService and one DestinationRule at networking.istio.io/v1.

Writes are make-before-break: first the DestinationRule with the subsets of both the old
and the new state, then the VirtualService, then the final DestinationRule. At no point
does a route name a subset the DestinationRule lacks (Istio would answer 503 NC).
"""

from __future__ import annotations

import copy
from typing import Any

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from canary.cluster import REQUEST_TIMEOUT, is_not_found, retrying
from canary.planner import PLANNER_ANNOTATIONS, Routing, same_routing
from canary.routing import RoutingMismatch

GROUP = "networking.istio.io"
VERSION = "v1"
VIRTUAL_SERVICES = "virtualservices"
DESTINATION_RULES = "destinationrules"


class IstioRouter:
    def __init__(
        self,
        api: k8s.ApiClient,
        namespace: str,
        virtual_service: str,
        destination_rule: str,
        *,
        retry_timeout: float = 30.0,
    ):
        self.namespace = namespace
        self.virtual_service = virtual_service
        self.destination_rule = destination_rule
        self.retry_timeout = retry_timeout
        self._custom = k8s.CustomObjectsApi(api)

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

    # --- plumbing ----------------------------------------------------------------------

    def _apply(self, plural: str, desired: dict[str, Any]) -> None:
        """Create or replace `desired` unless the cluster already holds it."""
        name = desired["metadata"]["name"]

        def write_if_changed() -> None:
            current = self._read(plural, name)
            if current is None:
                self._call("create_namespaced_custom_object", plural, body=desired)
            elif not same_routing(desired, current):
                body = _replacement(current, desired)
                self._call("replace_namespaced_custom_object", plural, name=name, body=body)

        retrying(write_if_changed, what=f"write {plural}/{name}", timeout=self.retry_timeout)

    def _read(self, plural: str, name: str) -> dict[str, Any] | None:
        def read() -> dict[str, Any] | None:
            try:
                return self._call("get_namespaced_custom_object", plural, name=name)
            except ApiException as exc:
                if is_not_found(exc):
                    return None
                raise

        return retrying(read, what=f"read {plural}/{name}", timeout=self.retry_timeout)

    def _call(self, method: str, plural: str, **kwargs: Any) -> dict[str, Any]:
        return getattr(self._custom, method)(
            GROUP, VERSION, self.namespace, plural, _request_timeout=REQUEST_TIMEOUT, **kwargs
        )


def with_all_subsets(desired: dict[str, Any], current: dict[str, Any]) -> dict[str, Any]:
    """The desired DestinationRule, also keeping every subset `current` has."""
    merged = copy.deepcopy(desired)
    subsets = merged["spec"].setdefault("subsets", [])
    names = {s.get("name") for s in subsets}
    old = (current or {}).get("spec", {}).get("subsets") or []
    subsets.extend(copy.deepcopy(s) for s in old if s.get("name") not in names)
    return merged


def _replacement(current: dict[str, Any], desired: dict[str, Any]) -> dict[str, Any]:
    """The desired object on top of the current metadata (resourceVersion, uid...).

    Annotations are merged: the planner's come from `desired`, all others stay as the
    server has them now (the lease is renewed while phases write).
    """
    body = copy.deepcopy(desired)
    metadata = copy.deepcopy(current.get("metadata", {}))
    if "labels" in desired["metadata"]:
        metadata["labels"] = copy.deepcopy(desired["metadata"]["labels"])
    wanted = desired["metadata"].get("annotations") or {}
    notes = metadata.get("annotations") or {}
    notes.update({k: wanted[k] for k in PLANNER_ANNOTATIONS if k in wanted})
    if notes:
        metadata["annotations"] = notes
    body["metadata"] = metadata
    return body


def _holds(actual: Routing, desired: Routing) -> bool:
    return not _mismatched(actual, desired)


def _mismatched(actual: Routing | None, desired: Routing) -> list[str]:
    kinds = []
    if actual is None or not same_routing(desired.virtual_service, actual.virtual_service):
        kinds.append(f"VirtualService {desired.virtual_service['metadata']['name']}")
    if actual is None or not same_routing(desired.destination_rule, actual.destination_rule):
        kinds.append(f"DestinationRule {desired.destination_rule['metadata']['name']}")
    return kinds
