"""A view of the cluster fed by list and watch through the official ``kubernetes`` client.

``WatchCache(api_client, namespace)`` keeps, for the mesh, the Deployments, Services,
VirtualServices and DestinationRules of one namespace (or of all, with ``namespace=None``),
and the Gateway API's HTTPRoutes when the server serves them. It is the second
implementation of ``sandbox.mesh.cluster_view.ClusterView``, next to the emulated API
server's own store, so the mesh routes the same way over either.

Each resource has a thread that does what an informer does: list (which gives the
resourceVersion to watch from), then watch from there, event by event, with bookmarks.
A watch the server ends (its timeout) is started again from the last resourceVersion seen;
a watch answered 410 Gone (that version is no longer kept) is replaced by a fresh list;
any other error (the server restarting, a dropped connection, a 5xx) is retried with
backoff, by listing again. A fresh list replaces what the cache held for the resource, so
nothing deleted in between is left behind.

Discovery decides what is watched: Istio's ``networking.istio.io`` at the version the
server prefers (v1, v1beta1 or v1alpha3) and ``gateway.networking.k8s.io`` HTTPRoutes when
the group serves them; a group the server does not serve is skipped (``skipped``).
"""

from __future__ import annotations

import copy
import functools
import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from kubernetes import client as k8s
from kubernetes import watch
from kubernetes.client.exceptions import ApiException

from canary.cluster import describe, is_transient

log = logging.getLogger(__name__)

Obj = dict[str, Any]
Key = tuple[str, str]  # (namespace, name)

ISTIO = "networking.istio.io"
GATEWAY_API = "gateway.networking.k8s.io"
WATCH_TIMEOUT_S = 300  # the server ends each watch after this; it is then resumed
CONNECT_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0
LIST_TIMEOUT_S = 30.0
FIRST_BACKOFF_S = 0.2
MAX_BACKOFF_S = 5.0


class ClusterUnavailable(OSError):
    """The cache could not list what it watches (the server unreachable, access refused)."""


@dataclass(frozen=True)
class Resource:
    """One kind the cache watches, and where the API serves it."""

    plural: str
    group: str  # "" for the core group
    version: str

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


CORE_RESOURCES = (Resource("deployments", "apps", "v1"), Resource("services", "", "v1"))
# (group, plural, versions in order of preference when the server prefers none of them)
CUSTOM_RESOURCES = (
    (ISTIO, "virtualservices", ("v1", "v1beta1", "v1alpha3")),
    (ISTIO, "destinationrules", ("v1", "v1beta1", "v1alpha3")),
    (GATEWAY_API, "httproutes", ("v1", "v1beta1")),
)


class WatchCache:
    def __init__(
        self,
        api_client: k8s.ApiClient,
        namespace: str | None = "default",
        *,
        watch_timeout_s: int = WATCH_TIMEOUT_S,
    ) -> None:
        self.api_client = api_client
        self.namespace = namespace
        self.watch_timeout_s = watch_timeout_s
        self.watching: dict[str, Resource] = {}  # plural -> where it is watched
        self.skipped: list[str] = []  # kinds the server does not serve
        self.lists: Counter[str] = Counter()  # lists done per kind: 1 + re-lists
        self._cond = threading.Condition()
        self._objects: dict[str, dict[Key, Obj]] = {}
        self._revision = 0
        # Set once a kind is listed, or once listing it failed for good (e.g. 403).
        self._settled: dict[str, threading.Event] = {}
        self._listed: set[str] = set()
        self._errors: dict[str, str] = {}  # kind -> the last error, while it lasts
        self._stop = threading.Event()
        self._watches: dict[str, watch.Watch] = {}
        self._threads: list[threading.Thread] = []

    # ------------------------------------------------------------------ ClusterView
    def revision(self) -> int:
        return self._revision

    def snapshot(self, resource: str, namespace: str | None = None) -> tuple[list[Obj], int]:
        """Shared (read-only) objects sorted by namespace and name, and the revision."""
        with self._cond:
            table = self._objects.get(resource, {})
            keys = sorted(k for k in table if namespace is None or k[0] == namespace)
            return [table[k] for k in keys], self._revision

    def list(self, resource: str, namespace: str | None = None) -> list[Obj]:
        return copy.deepcopy(self.snapshot(resource, namespace)[0])

    def wait(self, revision: int, timeout: float) -> int:
        """Block until the revision exceeds ``revision`` (or the timeout); the revision."""
        with self._cond:
            self._cond.wait_for(lambda: self._revision > revision, timeout)
            return self._revision

    # ------------------------------------------------------------------- lifecycle
    def start(self, timeout: float = 30.0) -> WatchCache:
        """Discover, then list and watch every kind; returns once each was listed.

        Raises ClusterUnavailable naming the kind and the cause when a kind could not be
        listed: at once for an answer that will not change (401, 403, 404), else after
        ``timeout``. Nothing is left running then.
        """
        try:
            self._discover()
        except Exception as exc:  # unreachable, refused, not an API server: all one answer
            raise ClusterUnavailable(f"cannot discover the API: {describe(exc)}") from None
        for plural in self.watching:
            self._settled[plural] = threading.Event()
            thread = threading.Thread(
                target=self._run, args=(self.watching[plural],), name=f"watch-{plural}", daemon=True
            )
            self._threads.append(thread)
            thread.start()
        deadline = time.monotonic() + timeout
        for plural, settled in self._settled.items():
            settled.wait(max(0.0, deadline - time.monotonic()))
            if plural not in self._listed:
                reason = self._errors.get(plural, f"no answer within {timeout:g}s")
                self.stop()
                raise ClusterUnavailable(f"cannot list {plural}: {reason}")
        return self

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """Stop every watcher and wait for their threads (a list under way ends first)."""
        self._stop.set()
        deadline = time.monotonic() + timeout
        while any(t.is_alive() for t in self._threads) and time.monotonic() < deadline:
            # Again on each round: a watch may have opened its stream since the last one.
            for w in list(self._watches.values()):
                w.stop()  # also shuts the stream's socket, so a blocked read returns
            for thread in self._threads:
                thread.join(timeout=0.2)
        self._threads.clear()

    def __enter__(self) -> WatchCache:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------- discovery
    def _discover(self) -> None:
        self.watching = {r.plural: r for r in CORE_RESOURCES}
        apis = k8s.ApisApi(self.api_client).get_api_versions(
            _request_timeout=(CONNECT_TIMEOUT_S, LIST_TIMEOUT_S)
        )
        groups = {group.name: group for group in apis.groups or []}
        for group, plural, known in CUSTOM_RESOURCES:
            version = self._served_version(groups.get(group), plural, known)
            if version is None:
                self.skipped.append(plural)
                log.debug("%s: not served by the API server; not watched", plural)
            else:
                self.watching[plural] = Resource(plural, group, version)

    def _served_version(self, group: Any, plural: str, known: tuple[str, ...]) -> str | None:
        """The version to watch ``plural`` at: the group's preferred one when it serves
        the kind, else the first known version that does; None when none does."""
        if group is None:
            return None
        served = [v.version for v in group.versions or []]
        preferred = group.preferred_version.version if group.preferred_version else None
        order = [preferred] if preferred in served else []
        order += [v for v in known if v in served and v != preferred]
        custom = k8s.CustomObjectsApi(self.api_client)
        for version in order:
            resources = custom.get_api_resources(
                group.name, version, _request_timeout=(CONNECT_TIMEOUT_S, LIST_TIMEOUT_S)
            )
            if any(r.name == plural for r in resources.resources or []):
                return version
        return None

    # ------------------------------------------------------------------ the watchers
    def _run(self, resource: Resource) -> None:
        """List, then watch until told to stop; list again after 410 or an error."""
        backoff = FIRST_BACKOFF_S
        while not self._stop.is_set():
            try:
                version = self._list(resource)
                backoff = FIRST_BACKOFF_S
                while not self._stop.is_set():
                    version = self._watch(resource, version)
            except Exception as exc:  # a dropped connection, the server restarting, ...
                if self._stop.is_set():
                    return  # the stop shut the stream
                if isinstance(exc, ApiException) and exc.status == 410:
                    # The version is too old to watch from: list again, at once.
                    log.debug("%s: watch expired (410 Gone); listing again", resource.plural)
                    continue
                if resource.plural not in self._listed and not is_transient(exc):
                    self._errors[resource.plural] = describe(exc)  # start() reports it
                    self._settled[resource.plural].set()
                    return
                self._failed(resource, exc)
            if self._stop.wait(backoff):
                return
            backoff = min(backoff * 2, MAX_BACKOFF_S)

    def _failed(self, resource: Resource, exc: BaseException) -> None:
        reason = describe(exc)
        self._errors[resource.plural] = reason
        log.warning("watching %s: %s; listing again", resource.plural, reason)

    def _list(self, resource: Resource) -> str:
        response = self._call(resource)(
            _preload_content=False, _request_timeout=(CONNECT_TIMEOUT_S, LIST_TIMEOUT_S)
        )
        try:
            listed = json.loads(response.data)
        finally:
            response.release_conn()
        items = {_key(obj): obj for obj in listed.get("items") or []}
        with self._cond:
            if self._objects.get(resource.plural) != items:
                self._objects[resource.plural] = items
                self._changed()
        self.lists[resource.plural] += 1
        self._errors.pop(resource.plural, None)
        self._listed.add(resource.plural)
        self._settled[resource.plural].set()
        return str((listed.get("metadata") or {}).get("resourceVersion") or "")

    def _watch(self, resource: Resource, version: str) -> str:
        """One watch, from ``version`` until the server ends it; the last version seen."""
        w = watch.Watch()
        self._watches[resource.plural] = w
        try:
            for event in self._events(w, resource, version):
                kind, obj = event.get("type"), event.get("object") or {}
                version = (obj.get("metadata") or {}).get("resourceVersion") or version
                if kind in ("ADDED", "MODIFIED", "DELETED"):
                    self._apply(resource.plural, kind, obj)
        finally:
            self._watches.pop(resource.plural, None)
        return version

    def _events(self, w: watch.Watch, resource: Resource, version: str) -> Iterator[Obj]:
        if self._stop.is_set():  # a stop that came before this watch existed
            return iter(())
        return w.stream(
            self._call(resource),
            resource_version=version,
            timeout_seconds=self.watch_timeout_s,
            allow_watch_bookmarks=True,
            deserialize=False,
            _request_timeout=(CONNECT_TIMEOUT_S, self.watch_timeout_s + 30),
        )

    def _apply(self, plural: str, kind: str, obj: Obj) -> None:
        with self._cond:
            table = self._objects.setdefault(plural, {})
            if kind == "DELETED":
                if table.pop(_key(obj), None) is None:
                    return
            else:
                table[_key(obj)] = obj
            self._changed()

    def _changed(self) -> None:
        self._revision += 1
        self._cond.notify_all()

    def _call(self, resource: Resource) -> Callable[..., Any]:
        """The client's list function for the kind, bound to its namespace and version."""
        ns = self.namespace
        if resource.plural == "deployments":
            apps = k8s.AppsV1Api(self.api_client)
            if ns is None:
                return apps.list_deployment_for_all_namespaces
            return functools.partial(apps.list_namespaced_deployment, ns)
        if resource.plural == "services":
            core = k8s.CoreV1Api(self.api_client)
            if ns is None:
                return core.list_service_for_all_namespaces
            return functools.partial(core.list_namespaced_service, ns)
        custom = k8s.CustomObjectsApi(self.api_client)
        if ns is None:
            return functools.partial(
                custom.list_cluster_custom_object, resource.group, resource.version, resource.plural
            )
        return functools.partial(
            custom.list_namespaced_custom_object,
            resource.group,
            resource.version,
            ns,
            resource.plural,
        )


def _key(obj: Obj) -> Key:
    meta = obj.get("metadata") or {}
    return meta.get("namespace") or "", meta.get("name") or ""
