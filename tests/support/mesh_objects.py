"""A minimal object store and Kubernetes/Istio object builders for mesh tests."""

from __future__ import annotations

import copy
import threading
from typing import Any


class FakeStore:
    """The read side of the sandbox store contract, plus ``put``/``delete`` for tests."""

    def __init__(self) -> None:
        self._objects: dict[tuple[str, str, str], dict] = {}
        self._revision = 0
        self._lock = threading.Lock()

    def put(self, resource: str, obj: dict) -> None:
        meta = obj.setdefault("metadata", {})
        meta.setdefault("namespace", "default")
        with self._lock:
            self._revision += 1
            meta.setdefault("creationTimestamp", f"2024-01-01T00:00:{self._revision:02d}Z")
            self._objects[(resource, meta["namespace"], meta["name"])] = copy.deepcopy(obj)

    def delete(self, resource: str, namespace: str, name: str) -> None:
        with self._lock:
            self._revision += 1
            self._objects.pop((resource, namespace, name), None)

    def list(self, resource: str, namespace: str | None = None) -> list[dict]:
        with self._lock:
            return [
                copy.deepcopy(o)
                for (r, ns, _), o in sorted(self._objects.items())
                if r == resource and namespace in (None, ns)
            ]

    def get(self, resource: str, namespace: str | None, name: str) -> dict | None:
        with self._lock:
            obj = self._objects.get((resource, namespace or "default", name))
            return copy.deepcopy(obj) if obj else None

    def revision(self) -> int:
        return self._revision


def service(name: str, selector: dict[str, str] | None = None, namespace: str = "default") -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "selector": selector if selector is not None else {"app": name},
            "ports": [{"port": 9080, "name": "http"}],
        },
    }


def deployment(
    name: str, labels: dict[str, str], ready: int = 1, namespace: str = "default"
) -> dict:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(labels)},
        "spec": {
            "replicas": max(ready, 1),
            "selector": {"matchLabels": dict(labels)},
            "template": {"metadata": {"labels": dict(labels)}},
        },
        "status": {"readyReplicas": ready} if ready else {},
    }


def destination_rule(
    host: str,
    subsets: dict[str, dict[str, str]],
    name: str | None = None,
    namespace: str = "default",
) -> dict:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "DestinationRule",
        "metadata": {"name": name or host, "namespace": namespace},
        "spec": {
            "host": host,
            "subsets": [{"name": n, "labels": lab} for n, lab in subsets.items()],
        },
    }


def virtual_service(
    hosts: list[str],
    http: list[dict[str, Any]],
    name: str | None = None,
    namespace: str = "default",
) -> dict:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": name or hosts[0].split(".")[0], "namespace": namespace},
        "spec": {"hosts": hosts, "http": http},
    }


def dest(subset: str | None, weight: int | None = None, host: str = "reviews") -> dict:
    out: dict[str, Any] = {"destination": {"host": host}}
    if subset is not None:
        out["destination"]["subset"] = subset
    if weight is not None:
        out["weight"] = weight
    return out


def split_vs(v1: int, v2: int) -> dict:
    return virtual_service(["reviews"], [{"route": [dest("v1", v1), dest("v2", v2)]}])


def header_vs() -> dict:
    """BookInfo's test route: end-user jason to v2, everyone else to v1."""
    return virtual_service(
        ["reviews"],
        [
            {"match": [{"headers": {"end-user": {"exact": "jason"}}}], "route": [dest("v2")]},
            {"route": [dest("v1")]},
        ],
    )


def bookinfo_reviews(
    store: FakeStore, versions: tuple[str, ...] = ("v1", "v2"), ready: dict[str, int] | None = None
) -> FakeStore:
    """The reviews Service, one Deployment per version and the DestinationRule."""
    ready = ready or {}
    store.put("services", service("reviews"))
    for v in versions:
        store.put(
            "deployments",
            deployment(f"reviews-{v}", {"app": "reviews", "version": v}, ready.get(v, 1)),
        )
    store.put(
        "destinationrules",
        destination_rule("reviews", {v: {"version": v} for v in ("v1", "v2", "v3")}),
    )
    return store
