"""The Kubernetes API as the release needs it: Deployments, readiness, Services, retries.

Everything goes through the official client and reads and writes plain dicts (the JSON
the API server speaks), so manifests can be compared and cloned without model classes.
One retry helper, `retrying`, is used by every call that talks to the API server.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import socket
import time
from collections.abc import Callable
from typing import Any, TypeVar

import urllib3
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException

from canary.errors import BadInput, CanaryError, describe
from canary.planner.objects import RELEASE_ANNOTATION

log = logging.getLogger(__name__)

T = TypeVar("T")

TRANSIENT_STATUSES = frozenset({429, 500, 502, 503, 504})
REQUEST_TIMEOUT = (5.0, 15.0)  # (connect, read) seconds for every API call
POLL_INTERVAL = 0.2


class ClusterConfigError(BadInput):
    """No usable cluster configuration (kubeconfig unreadable, context unknown...)."""


class ClusterUnreachable(BadInput):
    """The API server did not answer before anything was changed."""


class ReadinessTimeout(CanaryError):
    """A Deployment did not become ready before its deadline."""


# --- retries -------------------------------------------------------------------------


def is_transient(exc: BaseException) -> bool:
    """Errors worth retrying: server errors, throttling, timeouts, broken connections."""
    if isinstance(exc, ApiException):
        return exc.status in TRANSIENT_STATUSES or not exc.status
    return isinstance(exc, urllib3.exceptions.HTTPError | ConnectionError | socket.timeout)


def is_unreachable(exc: BaseException) -> bool:
    """A connection that failed or timed out (not an answer from the API server)."""
    return not isinstance(exc, ApiException) and is_transient(exc)


def is_conflict(exc: BaseException) -> bool:
    return isinstance(exc, ApiException) and exc.status == 409


def is_not_found(exc: BaseException) -> bool:
    return isinstance(exc, ApiException) and exc.status == 404


def retrying(
    operation: Callable[[], T],
    *,
    what: str = "API call",
    timeout: float = 30.0,
    first_delay: float = 0.1,
    max_delay: float = 2.0,
    retry_conflicts: bool = True,
) -> T:
    """Run `operation`, retrying transient errors and 409 conflicts until `timeout`.

    The operation must read what it writes from the server each time it runs: after a
    conflict it is simply run again, which re-reads the object before writing.
    """
    deadline = time.monotonic() + timeout
    delay = first_delay
    while True:
        try:
            return operation()
        except Exception as exc:
            retry = is_transient(exc) or (retry_conflicts and is_conflict(exc))
            wait = _retry_after(exc) or delay
            if not retry or time.monotonic() + wait > deadline:
                raise
            log.info("%s failed (%s); retrying in %.1fs", what, describe(exc), wait)
            time.sleep(wait)
            delay = min(delay * 2, max_delay)


def _retry_after(exc: Exception) -> float | None:
    headers = getattr(exc, "headers", None) or {}
    try:
        return min(float(headers.get("Retry-After", "")), 10.0)
    except ValueError:
        return None


# --- configuration ---------------------------------------------------------------------


POOL_SIZE = 64  # HTTP connections to the API server, shared by this process's releases


@functools.lru_cache(maxsize=8)
def api_client(kubeconfig: str | None = None, context: str | None = None) -> k8s.ApiClient:
    """An API client per (kubeconfig, context), shared by everything in this process.

    Without a kubeconfig, inside a pod (KUBERNETES_SERVICE_HOST set), the pod's service
    account is used; otherwise the usual kubeconfig search ($KUBECONFIG, ~/.kube/config).
    """
    if kubeconfig is None and context is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        return _in_cluster_client()
    where = kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
    try:
        return k8s_config.new_client_from_config(
            config_file=kubeconfig, context=context, client_configuration=_configuration()
        )
    except Exception as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ClusterConfigError(f"cannot use kubeconfig {where}: {reason}") from None


def _configuration() -> k8s.Configuration:
    """The client's defaults, with room for every release a worker runs at once.

    The default pool (5 connections per CPU) is shared by all releases in the process;
    past it, connections are dropped and opened again on every request.
    """
    configuration = k8s.Configuration()
    configuration.connection_pool_maxsize = POOL_SIZE
    # `retrying` above retries, with backoff and a deadline; urllib3's own immediate
    # retries would only add a warning per attempt.
    configuration.retries = 0
    return configuration


def _in_cluster_client() -> k8s.ApiClient:
    configuration = _configuration()
    try:
        k8s_config.load_incluster_config(client_configuration=configuration)
    except k8s_config.ConfigException as exc:
        raise ClusterConfigError(f"cannot use the in-cluster configuration: {exc}") from None
    return k8s.ApiClient(configuration)


# --- Deployments ---------------------------------------------------------------------


def is_ready(deployment: dict[str, Any] | None) -> bool:
    """Ready: the current spec is observed and every wanted replica is ready."""
    if not deployment:
        return False
    replicas = deployment.get("spec", {}).get("replicas", 1)
    status = deployment.get("status") or {}
    generation = deployment.get("metadata", {}).get("generation", 0)
    return (
        replicas > 0
        and status.get("readyReplicas", 0) >= replicas
        and status.get("observedGeneration", 0) >= generation
    )


def readiness_summary(deployment: dict[str, Any] | None) -> str:
    if not deployment:
        return "not found"
    replicas = deployment.get("spec", {}).get("replicas", 1)
    ready = (deployment.get("status") or {}).get("readyReplicas", 0)
    return f"{ready}/{replicas} replicas ready"


class Cluster:
    """Deployments and Services in one namespace, every call retried on transient errors."""

    def __init__(self, api: k8s.ApiClient, namespace: str, *, retry_timeout: float = 30.0):
        self.namespace = namespace
        self.retry_timeout = retry_timeout
        self._apps = k8s.AppsV1Api(api)
        self._core = k8s.CoreV1Api(api)

    def get_deployment(self, name: str) -> dict[str, Any] | None:
        return self._retry(f"read Deployment {name}", lambda: self._read(name))

    def apply_deployment(
        self,
        manifest: dict[str, Any],
        unchanged: Callable[[dict[str, Any], dict[str, Any]], bool],
    ) -> tuple[dict[str, Any], bool]:
        """Create when absent, replace when `unchanged(manifest, current)` is false.

        Returns the Deployment and whether anything was written. A conflict (created
        meanwhile, or changed since read) re-reads and decides again.
        """
        name = manifest["metadata"]["name"]

        def apply() -> tuple[dict[str, Any], bool]:
            current = self._read(name)
            if current is None:
                return self._create(manifest), True
            if unchanged(manifest, current):
                return current, False
            return self._replace(_with_desired(current, manifest)), True

        return self._retry(f"apply Deployment {name}", apply)

    def delete_deployment(self, name: str) -> bool:
        """Delete; False (and no write) when there is nothing to delete."""
        if self.get_deployment(name) is None:
            return False
        return self._retry(f"delete Deployment {name}", lambda: self._delete(name))

    def scale_deployment(self, name: str, replicas: int) -> dict[str, Any] | None:
        """Set the replica count; no write when it already is; None when not found."""
        current = self.get_deployment(name)
        if current is None or current.get("spec", {}).get("replicas", 1) == replicas:
            return current

        def scale(deployment: dict[str, Any]) -> dict[str, Any]:
            deployment["spec"]["replicas"] = replicas
            return deployment

        return self._update(name, scale)

    def wait_ready(self, name: str, deadline: float) -> dict[str, Any]:
        """Poll until the Deployment is ready; `deadline` is a time.monotonic() value.

        Raises ReadinessTimeout once the deadline has passed.
        """
        while True:
            deployment = self.get_deployment(name)
            if is_ready(deployment):
                return deployment  # type: ignore[return-value]
            left = deadline - time.monotonic()
            if left <= 0:
                raise ReadinessTimeout(
                    f"Deployment {name} not ready before the deadline "
                    f"({readiness_summary(deployment)})"
                )
            time.sleep(min(POLL_INTERVAL, left))

    # --- Services --------------------------------------------------------------------
    #
    # A Service a release creates carries the release's id (annotation
    # canary.release/release-id, as the canary Deployment does): the mark of ownership.
    # A release deletes a Service only when it carries its own id.

    def get_service(self, name: str) -> dict[str, Any] | None:
        return self._retry(f"read Service {name}", lambda: self._read_service(name))

    def create_service(self, manifest: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """Create the Service unless one of its name exists (that one is used as it is).

        Returns the Service and whether it was created.
        """
        name = manifest["metadata"]["name"]

        def create() -> tuple[dict[str, Any], bool]:
            current = self._read_service(name)
            if current is not None:
                return current, False
            # Created meanwhile (409): `_retry` runs this again, which finds it.
            response = self._core.create_namespaced_service(
                self.namespace, manifest, **self._call_options()
            )
            return self._json(response), True

        return self._retry(f"create Service {name}", create)

    def delete_service(self, name: str, *, owner: str) -> bool:
        """Delete the Service if it carries `owner`'s mark; False (no write) otherwise.

        The delete names the uid read, so a Service made anew meanwhile is not deleted.
        """

        def delete() -> bool:
            current = self._read_service(name)
            if current is None or created_by(current) != owner:
                return False
            options = {"preconditions": {"uid": current["metadata"].get("uid")}}
            try:
                self._core.delete_namespaced_service(
                    name, self.namespace, body=options, **self._call_options()
                )
            except ApiException as exc:
                if is_not_found(exc):
                    return False
                raise  # a conflict (another uid) is retried: read again, decide again
            return True

        return self._retry(f"delete Service {name}", delete)

    def _read_service(self, name: str) -> dict[str, Any] | None:
        try:
            response = self._core.read_namespaced_service(
                name, self.namespace, **self._call_options()
            )
        except ApiException as exc:
            if is_not_found(exc):
                return None
            raise
        return self._json(response)

    # --- plumbing ----------------------------------------------------------------------

    def _retry(self, what: str, operation: Callable[[], T]) -> T:
        return retrying(operation, what=what, timeout=self.retry_timeout)

    def _update(
        self, name: str, change: Callable[[dict[str, Any]], dict[str, Any]]
    ) -> dict[str, Any]:
        """Read, change, replace with the read resourceVersion; a conflict starts over."""

        def read_change_replace() -> dict[str, Any]:
            current = self._read(name)
            if current is None:
                raise LookupError(f"Deployment {name} not found in namespace {self.namespace}")
            return self._replace(change(current))

        return self._retry(f"update Deployment {name}", read_change_replace)

    def _read(self, name: str) -> dict[str, Any] | None:
        try:
            response = self._apps.read_namespaced_deployment(
                name, self.namespace, **self._call_options()
            )
        except ApiException as exc:
            if is_not_found(exc):
                return None
            raise
        return self._json(response)

    def _create(self, manifest: dict[str, Any]) -> dict[str, Any]:
        response = self._apps.create_namespaced_deployment(
            self.namespace, manifest, **self._call_options()
        )
        return self._json(response)

    def _replace(self, deployment: dict[str, Any]) -> dict[str, Any]:
        deployment.pop("status", None)
        name = deployment["metadata"]["name"]
        response = self._apps.replace_namespaced_deployment(
            name, self.namespace, deployment, **self._call_options()
        )
        return self._json(response)

    def _delete(self, name: str) -> bool:
        try:
            self._apps.delete_namespaced_deployment(name, self.namespace, **self._call_options())
        except ApiException as exc:
            if is_not_found(exc):
                return False
            raise
        return True

    @staticmethod
    def _call_options() -> dict[str, Any]:
        return {"_preload_content": False, "_request_timeout": REQUEST_TIMEOUT}

    @staticmethod
    def _json(response: Any) -> dict[str, Any]:
        return json.loads(response.data or b"{}")


def created_by(obj: dict[str, Any]) -> str | None:
    """The release that created an object, by its mark (None: not made by a release)."""
    notes = (obj.get("metadata") or {}).get("annotations") or {}
    return notes.get(RELEASE_ANNOTATION)


def _with_desired(current: dict[str, Any], desired: dict[str, Any]) -> dict[str, Any]:
    """The current object (keeping resourceVersion etc.) with the desired spec and labels."""
    for key in ("labels", "annotations"):
        current["metadata"][key] = desired["metadata"].get(key) or {}
    current["spec"] = desired["spec"]
    return current
