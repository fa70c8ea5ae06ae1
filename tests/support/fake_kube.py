"""An in-memory Kubernetes API behind the official client, for tests without a server.

`FakeKube.api_client()` is a real `kubernetes.client.ApiClient` whose HTTP call is answered
here, so `CustomObjectsApi`, `CoreV1Api` and `AppsV1Api` (the surface the routers, the
lease and `Cluster` use) run unchanged down to the request they build. It keeps objects
with uid, resourceVersion and generation; answers 404, 409 (exists, stale
resourceVersion, a delete precondition) and 422 (a body its schema refuses) with Status
bodies; validates HTTPRoutes against the Gateway API CRD and stores them with its defaults
applied, as an API server with the CRD installed does (no CEL rules); and marks a
Deployment ready as soon as it is written (no pods, no delay), unless told it never is.

Every request is recorded (method, path, query, status), and every write in `events`, so
tests can replay what the cluster held after each one.
"""

from __future__ import annotations

import copy
import itertools
import json
import re
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from kubernetes import client as k8s
from kubernetes.client import rest

from tests.support.gateway_api_crd import defaulted, route_errors

_PATH = re.compile(
    r"^/(?:api/(?P<core>v1)|apis/(?P<group>[^/]+)/(?P<version>[^/]+))"
    r"/namespaces/(?P<namespace>[^/]+)/(?P<plural>[^/]+)(?:/(?P<name>[^/]+))?$"
)
_KINDS = {"services": "Service", "deployments": "Deployment", "httproutes": "HTTPRoute"}

Key = tuple[str, str, str]  # (API group, plural, namespace)


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: str
    status: int


@dataclass(frozen=True)
class Event:
    """One write: what the object was afterwards (None: deleted)."""

    method: str
    plural: str
    name: str
    object: dict[str, Any] | None


class _Raw:
    """What RESTResponse wraps: a urllib3 response's status, reason, headers and body."""

    def __init__(self, status: int, body: Any):
        self.status = status
        self.reason = {200: "OK", 201: "Created"}.get(status, "Error")
        self.headers = {"content-type": "application/json"}
        self.data = json.dumps(body).encode()


class _FakeApiClient(k8s.ApiClient):
    def __init__(self, kube: FakeKube):
        configuration = k8s.Configuration()
        configuration.host = "http://127.0.0.1:9"  # never connected to: answered in memory
        super().__init__(configuration)
        self._kube = kube

    def call_api(
        self,
        method: str,
        url: str,
        header_params: dict[str, str] | None = None,
        body: Any = None,
        post_params: Any = None,
        _request_timeout: Any = None,
    ) -> rest.RESTResponse:
        status, answer = self._kube.handle(method, url, body)
        return rest.RESTResponse(_Raw(status, answer))


class ApiError(Exception):
    def __init__(self, status: int, reason: str, message: str):
        super().__init__(message)
        self.status, self.reason, self.message = status, reason, message


class FakeKube:
    def __init__(self, served: tuple[str, ...] = ("services", "deployments", "httproutes")):
        self.served = served  # resources (plurals) served; others answer 404, as unknown
        self._objects: dict[Key, dict[str, dict[str, Any]]] = {}
        self._lock = threading.RLock()
        self._versions = itertools.count(1)
        self.requests: list[Request] = []
        self.events: list[Event] = []
        self.never_ready: set[str] = set()  # Deployments that never become ready
        # Called after each successful write (method, plural, name), as a webhook or another
        # writer would act; it may change objects through `put`.
        self.after_write: Callable[[str, str, str], None] | None = None

    def api_client(self) -> k8s.ApiClient:
        return _FakeApiClient(self)

    # --- for tests ---------------------------------------------------------------------

    def get(self, plural: str, name: str, namespace: str = "default") -> dict[str, Any] | None:
        with self._lock:
            found = self._objects.get((_group_of(plural), plural, namespace), {}).get(name)
            return copy.deepcopy(found)

    def put(self, plural: str, obj: dict[str, Any]) -> dict[str, Any]:
        """Store an object as if someone wrote it (recorded in events, not in requests)."""
        with self._lock:
            meta = obj.setdefault("metadata", {})
            meta.setdefault("namespace", "default")
            key = (_group_of(plural), plural, meta["namespace"])
            old = self._objects.get(key, {}).get(meta["name"])
            stored = self._stored(plural, obj, old)
            self._objects.setdefault(key, {})[meta["name"]] = stored
            self.events.append(Event("PUT", plural, meta["name"], copy.deepcopy(stored)))
            return copy.deepcopy(stored)

    def writes(self) -> list[Request]:
        return [r for r in self.requests if r.method != "GET"]

    def clear_requests(self) -> None:
        with self._lock:
            self.requests.clear()

    # --- the API -------------------------------------------------------------------------

    def handle(self, method: str, url: str, body: Any) -> tuple[int, Any]:
        parts = urlsplit(url)
        found = _PATH.match(parts.path)
        with self._lock:
            try:
                if found is None or found["plural"] not in self.served:
                    raise ApiError(
                        404, "NotFound", "the server could not find the requested resource"
                    )
                status, answer = self._serve(method, found, body)
            except ApiError as exc:
                status, answer = exc.status, _status(exc)
            self.requests.append(Request(method, parts.path, parts.query, status))
        if found is not None and method != "GET" and status < 300 and self.after_write:
            self.after_write(method, found["plural"], found["name"] or _name_of(body))
        return status, answer

    def _serve(self, method: str, path: re.Match[str], body: Any) -> tuple[int, Any]:
        group = "" if path["core"] else path["group"]
        plural, name, namespace = path["plural"], path["name"], path["namespace"]
        api_version = "v1" if path["core"] else f"{group}/{path['version']}"
        objects = self._objects.setdefault((group, plural, namespace), {})
        if method == "GET" and name is None:
            items = [_viewed(o, api_version) for o in objects.values()]
            return 200, {"kind": f"{_KINDS.get(plural, 'Object')}List", "items": items}
        if method == "POST":
            name = _name_of(body)
            if name in objects:
                raise ApiError(409, "AlreadyExists", f'{plural} "{name}" already exists')
            body = {**body, "metadata": {**body.get("metadata", {}), "namespace": namespace}}
            return 201, self._write(method, plural, objects, name, body, None, api_version)
        current = objects.get(name or "")
        if current is None:
            raise ApiError(404, "NotFound", f'{plural} "{name}" not found')
        if method == "GET":
            return 200, _viewed(current, api_version)
        if method == "PUT":
            given = body.get("metadata", {}).get("resourceVersion")
            if not given:
                raise ApiError(422, "Invalid", "metadata.resourceVersion: must be specified")
            if given != current["metadata"]["resourceVersion"]:
                raise ApiError(409, "Conflict", f'{plural} "{name}": the object has been modified')
            return 200, self._write(method, plural, objects, name, body, current, api_version)
        if method == "PATCH":
            if not isinstance(body, dict):
                raise ApiError(415, "UnsupportedMediaType", "only merge patches are served here")
            patched = _merge_patch(copy.deepcopy(current), body)
            return 200, self._write(method, plural, objects, name, patched, current, api_version)
        if method == "DELETE":
            uid = ((body or {}).get("preconditions") or {}).get("uid")
            if uid and uid != current["metadata"]["uid"]:
                raise ApiError(409, "Conflict", f"Precondition failed: UID in precondition: {uid}")
            del objects[name]
            self.events.append(Event(method, plural, name, None))
            return 200, {"kind": "Status", "apiVersion": "v1", "status": "Success"}
        raise ApiError(405, "MethodNotAllowed", f"{method} is not served here")

    def _write(
        self,
        method: str,
        plural: str,
        objects: dict[str, dict[str, Any]],
        name: str,
        body: dict[str, Any],
        current: dict[str, Any] | None,
        api_version: str,
    ) -> dict[str, Any]:
        if plural == "httproutes":
            errors = route_errors({**body, "apiVersion": api_version})
            if errors:
                raise ApiError(422, "Invalid", f"HTTPRoute {name} is invalid: {errors[0]}")
        stored = self._stored(plural, body, current)
        objects[name] = stored
        self.events.append(Event(method, plural, name, copy.deepcopy(stored)))
        return _viewed(stored, api_version)

    def _stored(
        self, plural: str, body: dict[str, Any], current: dict[str, Any] | None
    ) -> dict[str, Any]:
        """The object as the server keeps it: server metadata, defaults, status."""
        stored = copy.deepcopy(body)
        stored.pop("status", None)
        meta = stored.setdefault("metadata", {})
        old_meta = (current or {}).get("metadata", {})
        meta["uid"] = old_meta.get("uid") or str(uuid.uuid4())
        meta["creationTimestamp"] = old_meta.get("creationTimestamp", "2024-01-01T00:00:00Z")
        meta["resourceVersion"] = str(next(self._versions))
        changed = current is None or current.get("spec") != stored.get("spec")
        meta["generation"] = old_meta.get("generation", 0) + (1 if changed else 0)
        if plural == "httproutes":
            stored = defaulted(stored)
        elif plural == "services":
            _default_service(stored)
        elif plural == "deployments":
            stored["status"] = self._deployment_status(stored)
        return stored

    def _deployment_status(self, deployment: dict[str, Any]) -> dict[str, Any]:
        replicas = deployment.get("spec", {}).get("replicas", 1)
        ready = 0 if deployment["metadata"]["name"] in self.never_ready else replicas
        return {
            "observedGeneration": deployment["metadata"]["generation"],
            "replicas": replicas,
            "readyReplicas": ready,
        }


def _group_of(plural: str) -> str:
    return {"httproutes": "gateway.networking.k8s.io", "deployments": "apps"}.get(plural, "")


def _name_of(body: Any) -> str:
    return str(((body or {}).get("metadata") or {}).get("name", ""))


def _viewed(obj: dict[str, Any], api_version: str) -> dict[str, Any]:
    return {**copy.deepcopy(obj), "apiVersion": api_version}


def _status(exc: ApiError) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "message": exc.message,
        "reason": exc.reason,
        "code": exc.status,
    }


def _merge_patch(target: Any, patch: Any) -> Any:
    """JSON merge patch (RFC 7386)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = _merge_patch(out.get(key), value)
    return out


def _default_service(service: dict[str, Any]) -> None:
    """Some of what an API server fills in on a Service (never compared by the release)."""
    spec = service.setdefault("spec", {})
    spec.setdefault("type", "ClusterIP")
    spec.setdefault("sessionAffinity", "None")
    spec.setdefault("clusterIP", "10.96.0.10")
    for port in spec.get("ports", []):
        port.setdefault("protocol", "TCP")
        port.setdefault("targetPort", port.get("port"))
