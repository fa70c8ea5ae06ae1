"""Reading and writing the custom objects routes are made of, as every router does.

A write is skipped when the cluster already holds what the planner said; a replacement
keeps the server's metadata (resourceVersion: a concurrent writer conflicts, and the write
is read again and decided again) and every annotation the planner does not own.
"""

from __future__ import annotations

import copy
from typing import Any, ClassVar

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from canary.cluster import REQUEST_TIMEOUT, is_not_found, retrying
from canary.errors import CanaryError
from canary.planner import PLANNER_ANNOTATIONS, same_routing


class RouteApiMissing(CanaryError):
    """The API server does not serve the routes' API: its CRD is not installed."""


def missing_api(group: str, version: str, plural: str) -> RouteApiMissing:
    """The error of a create answered 404: no such resource on this server."""
    return RouteApiMissing(
        f"the API server does not serve {plural}.{group}/{version}: install its CRD "
        "(or pick another routing.provider)"
    )


class CustomObjectRouter:
    """The plumbing of a router whose routes are custom objects of one API group."""

    group: ClassVar[str]
    version: ClassVar[str]

    def __init__(self, api: k8s.ApiClient, namespace: str, *, retry_timeout: float = 30.0):
        self.namespace = namespace
        self.retry_timeout = retry_timeout
        self._custom = k8s.CustomObjectsApi(api)

    def _apply(self, plural: str, desired: dict[str, Any]) -> None:
        """Create or replace `desired` unless the cluster already holds it."""
        name = desired["metadata"]["name"]

        def write_if_changed() -> None:
            current = self._read(plural, name)
            if current is None:
                self._create(plural, desired)
            elif not same_routing(desired, current):
                body = replacement(current, desired)
                self._call("replace_namespaced_custom_object", plural, name=name, body=body)

        retrying(write_if_changed, what=f"write {plural}/{name}", timeout=self.retry_timeout)

    def _create(self, plural: str, desired: dict[str, Any]) -> None:
        try:
            self._call("create_namespaced_custom_object", plural, body=desired)
        except ApiException as exc:
            if is_not_found(exc):
                raise missing_api(self.group, self.version, plural) from None
            raise

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
            self.group,
            self.version,
            self.namespace,
            plural,
            _request_timeout=REQUEST_TIMEOUT,
            **kwargs,
        )


def replacement(current: dict[str, Any], desired: dict[str, Any]) -> dict[str, Any]:
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
