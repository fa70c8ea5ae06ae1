"""An emulated Kubernetes API server over HTTP/1.1 on 127.0.0.1.

Serves discovery, core/v1 Namespaces, Services, Pods and ServiceAccounts, apps/v1
Deployments (with ``/status`` and ``/scale``), Istio's VirtualServices and
DestinationRules at ``networking.istio.io`` v1, v1beta1 and v1alpha3 (three views of the
same stored objects) and the Gateway API's HTTPRoutes at ``gateway.networking.k8s.io`` v1
and v1beta1 (defaulted and validated as their CRD does, ``sandbox.kube.gateway_schema``).
Verbs: get, list, watch, create, update (PUT), patch (JSON merge, JSON patch, strategic
merge for built-in kinds, server-side apply approximated as a merge), delete and
deletecollection, with the status codes, ``Status`` bodies and metadata
semantics of the real API server, so that the official clients behave as against a cluster.

Every request is recorded (method, path, status) in a bounded log, readable as
``ApiServer.requests`` and at ``GET /debug/requests``.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import select
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlsplit

import yaml

from sandbox.http_server import HttpServer, RequestHandler
from sandbox.kube import builtin_types as bt
from sandbox.kube.gateway_schema import GatewayApiValidator
from sandbox.kube.istio_schema import IstioValidator
from sandbox.kube.patch import BadPatch, PatchError, json_patch, merge_patch, strategic_merge_patch
from sandbox.kube.resources import (
    BY_PATH,
    BY_PLURAL,
    GATEWAY_API,
    KUBE_VERSION,
    ResourceType,
    api_group,
    api_group_list,
    api_resource_list,
    api_versions,
)
from sandbox.kube.selectors import (
    SelectorError,
    field_matches,
    from_label_selector,
    matches,
    parse_field_selector,
    parse_label_selector,
    to_string,
)
from sandbox.kube.store import AlreadyExists, Conflict, Gone, NotFound, ObjectStore, clone
from sandbox.kube.validation import FieldError

Obj = dict[str, Any]
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
PROTECTED_NAMESPACES = frozenset({"default", "kube-system", "kube-public"})
DEFAULT_WATCH_TIMEOUT_S = 1800.0
HTTP_REASONS = {
    400: "BadRequest",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    410: "Expired",
    415: "UnsupportedMediaType",
    422: "Invalid",
    500: "InternalError",
}


# ----------------------------------------------------------------- errors
class ApiError(Exception):
    """An error answer: a ``Status`` object with the HTTP code."""

    def __init__(
        self, code: int, message: str, reason: str | None = None, details: Obj | None = None
    ) -> None:
        super().__init__(message)
        self.code, self.message = code, message
        self.reason = reason or HTTP_REASONS.get(code, "Unknown")
        self.details = details

    def status(self) -> Obj:
        body: Obj = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details is not None:
            body["details"] = self.details
        return body


def _details(rtype: ResourceType, name: str, *, kind: str | None = None) -> Obj:
    out: Obj = {"name": name}
    if rtype.group:
        out["group"] = rtype.group
    out["kind"] = kind or rtype.plural
    return out


def not_found(rtype: ResourceType, name: str) -> ApiError:
    return ApiError(404, f'{rtype.qualified} "{name}" not found', "NotFound", _details(rtype, name))


def invalid(rtype: ResourceType, name: str, errors: list[FieldError]) -> ApiError:
    text = str(errors[0]) if len(errors) == 1 else "[" + ", ".join(map(str, errors)) + "]"
    causes = [{"reason": e.reason, "message": e.message(), "field": e.field} for e in errors]
    details = _details(rtype, name, kind=rtype.kind) | {"causes": causes}
    return ApiError(422, f'{rtype.qualified_kind} "{name}" is invalid: {text}', "Invalid", details)


def _store_error(rtype: ResourceType, exc: Exception) -> ApiError:
    name = getattr(exc, "name", "")
    if isinstance(exc, NotFound):
        return not_found(rtype, name)
    if isinstance(exc, AlreadyExists):
        return ApiError(
            409,
            f'{rtype.qualified} "{name}" already exists',
            "AlreadyExists",
            _details(rtype, name),
        )
    return ApiError(
        409,
        f'Operation cannot be fulfilled on {rtype.qualified} "{name}": the '
        "object has been modified; please apply your changes to the latest "
        "version and try again",
        "Conflict",
        _details(rtype, name),
    )


# ------------------------------------------------------------ fault injection
class RequestFaults(Protocol):
    """Faults drawn at each request's entry (``sandbox.chaos.Chaos`` is one)."""

    def intercept(self, handler: BaseHTTPRequestHandler, record: Callable[[int], None]) -> bool:
        """Apply a fault to the request; True when the fault answered it (or hung up).
        ``record(status)`` logs the request as answered with ``status`` (0: no answer)."""
        ...


# --------------------------------------------------------- request / answer
@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    content_type: str
    body: bytes


@dataclass
class Answer:
    code: int
    body: Any  # dict -> JSON, str -> text/plain
    content_type: str = "application/json"


@dataclass
class WatchStream:
    events: Iterator[Obj]


@dataclass(frozen=True)
class RequestRecord:
    time: float
    method: str
    path: str
    query: str
    status: int


@dataclass
class Target:
    """What a resource URL names."""

    rtype: ResourceType
    version: str
    namespace: str | None
    name: str | None
    sub: str | None


# ----------------------------------------------------------------- server
class ApiServer:
    def __init__(
        self,
        store: ObjectStore,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        istio: IstioValidator | None = None,
        gateway_api: GatewayApiValidator | None = None,
        log_size: int = 5000,
        chaos: RequestFaults | None = None,
    ) -> None:
        self.store = store
        self.chaos = chaos  # fault injection (sandbox.chaos), checked at each request's entry
        self.istio = istio or IstioValidator()
        self.gateway_api = gateway_api or GatewayApiValidator()
        self.cluster_ips = bt.ClusterIPs()
        self._log: deque[RequestRecord] = deque(maxlen=log_size)
        self._log_lock = threading.Lock()
        self._stopping = threading.Event()
        self._http = HttpServer(_handler(self), host=host, port=port, name="sandbox-apiserver")

    # ------------------------------------------------------------ lifecycle
    @property
    def address(self) -> tuple[str, int]:
        return self._http.address

    @property
    def url(self) -> str:
        return self._http.url

    def start(self) -> ApiServer:
        for ns in ("default", "kube-system", "kube-public", "kube-node-lease"):
            self.ensure_namespace(ns)
        self._http.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self.store.poke()  # open watches notice the stop and end their streams
        self._http.stop()

    def ensure_namespace(self, name: str) -> None:
        if self.store.get("namespaces", None, name) is None:
            obj = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
            bt.default_namespace(obj)
            with contextlib.suppress(AlreadyExists):
                self.store.create("namespaces", obj)

    def create_object(self, plural: str, obj: Obj) -> Obj:
        """Create through admission (defaults, validation) without HTTP, e.g. to preload."""
        rtype = BY_PLURAL[plural]
        version = obj.get("apiVersion", "").rpartition("/")[2] or rtype.storage_version
        if version not in rtype.versions:
            version = rtype.storage_version
        namespace = obj.get("metadata", {}).get("namespace") if rtype.namespaced else None
        target = Target(rtype, version, namespace, None, None)
        body = clone(obj) | {"apiVersion": rtype.api_version(version), "kind": rtype.kind}
        answer = self._create(target, body, dry_run=False)
        return answer.body

    # ----------------------------------------------------------- request log
    def record(self, method: str, path: str, query: str, status: int) -> None:
        with self._log_lock:
            self._log.append(RequestRecord(time.time(), method, path, query, status))

    @property
    def requests(self) -> list[RequestRecord]:
        with self._log_lock:
            return list(self._log)

    def writes(self) -> list[RequestRecord]:
        return [r for r in self.requests if r.method in WRITE_METHODS]

    def clear_requests(self) -> None:
        with self._log_lock:
            self._log.clear()

    # -------------------------------------------------------------- routing
    def handle(self, req: Request) -> Answer | WatchStream:
        try:
            return self._route(req)
        except ApiError as exc:
            return Answer(exc.code, exc.status())

    def _route(self, req: Request) -> Answer | WatchStream:
        path = "/" + req.path.strip("/")
        simple = self._simple_paths(path)
        if simple is not None:
            if req.method != "GET":
                raise ApiError(405, f"the server does not allow this method on {path}")
            return simple
        target = self._resolve(path, req.method)
        if isinstance(target, Answer):
            return target
        return self._dispatch(req, target)

    def _simple_paths(self, path: str) -> Answer | None:
        if path in ("/healthz", "/livez", "/readyz"):
            return Answer(200, "ok", "text/plain")
        if path == "/version":
            return Answer(200, dict(KUBE_VERSION))
        if path == "/debug/requests":
            return Answer(200, [asdict(r) for r in self.requests])
        if path == "/api":
            host, port = self.address
            return Answer(200, api_versions(f"{host}:{port}"))
        if path == "/apis":
            return Answer(200, api_group_list())
        return None

    def _resolve(self, path: str, method: str) -> Target | Answer:
        parts = path.strip("/").split("/")
        if parts[0] == "api" and len(parts) >= 2:
            group, version, rest = "", parts[1], parts[2:]
        elif parts[0] == "apis" and len(parts) >= 3:
            group, version, rest = parts[1], parts[2], parts[3:]
        elif parts[0] == "apis" and len(parts) == 2 and (doc := api_group(parts[1])):
            return Answer(200, doc)
        else:
            raise ApiError(404, "the server could not find the requested resource")
        if not rest:
            doc = api_resource_list(group, version)
            if doc is None:
                raise ApiError(404, "the server could not find the requested resource")
            return Answer(200, doc)
        namespace = None
        if rest[0] == "namespaces" and len(rest) >= 3:
            namespace, rest = rest[1], rest[2:]
        rtype = BY_PATH.get((group, version, rest[0]))
        if rtype is None or len(rest) > 3 or (namespace and not rtype.namespaced):
            raise ApiError(404, "the server could not find the requested resource")
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        if sub is not None and sub not in rtype.subresources:
            raise ApiError(404, "the server could not find the requested resource")
        if rtype.namespaced and namespace is None and (name or method != "GET"):
            raise ApiError(404, "the server could not find the requested resource")
        return Target(rtype, version, namespace, name, sub)

    def _dispatch(self, req: Request, t: Target) -> Answer | WatchStream:
        m = req.method
        if t.sub == "scale":
            return self._scale(req, t)
        if t.name is None:
            if m == "GET":
                return (
                    self._watch(req, t) if _truthy(req.query.get("watch")) else self._list(req, t)
                )
            if m == "POST":
                return self._create(t, self._decode(t, req.body, req.content_type), _dry_run(req))
            if m == "DELETE":
                return self._delete_collection(req, t)
        elif m == "GET":
            return Answer(200, self._view(t, self._get(t)))
        elif m == "PUT":
            return self._replace(req, t)
        elif m == "PATCH":
            return self._patch(req, t)
        elif m == "DELETE" and t.sub is None:
            return self._delete(req, t)
        raise ApiError(
            405,
            f"the server does not allow this method on the requested resource ({m})",
            "MethodNotAllowed",
        )

    # ---------------------------------------------------------------- reads
    def _get(self, t: Target) -> Obj:
        obj = self.store.get(t.rtype.plural, t.namespace, t.name or "")
        if obj is None:
            raise not_found(t.rtype, t.name or "")
        return obj

    def _view(self, t: Target, obj: Obj, *, copy: bool = False) -> Obj:
        """The object as the requested API version shows it."""
        head = {"apiVersion": t.rtype.api_version(t.version), "kind": t.rtype.kind}
        rest = clone(obj) if copy else obj
        return head | {k: v for k, v in rest.items() if k not in head}

    def _filter(self, req: Request, t: Target) -> Callable[[Obj], bool]:
        try:
            labels = parse_label_selector(req.query.get("labelSelector"))
            fields = parse_field_selector(req.query.get("fieldSelector"))
        except SelectorError as exc:
            raise ApiError(400, str(exc)) from exc
        namespace = t.namespace

        def keep(obj: Obj) -> bool:
            meta = obj.get("metadata", {})
            return (
                (namespace is None or meta.get("namespace") == namespace)
                and matches(labels, meta.get("labels"))
                and field_matches(fields, obj)
            )

        return keep

    def _list(self, req: Request, t: Target) -> Answer:
        keep = self._filter(req, t)
        objs, revision = self.store.snapshot(t.rtype.plural, t.namespace)
        items = [self._view(t, o) for o in objs if keep(o)]
        return Answer(
            200,
            {
                "kind": f"{t.rtype.kind}List",
                "apiVersion": t.rtype.api_version(t.version),
                "metadata": {"resourceVersion": str(revision)},
                "items": items,
            },
        )

    def _watch(self, req: Request, t: Target) -> WatchStream:
        keep = self._filter(req, t)
        rv = req.query.get("resourceVersion", "")
        try:
            timeout = float(req.query.get("timeoutSeconds") or DEFAULT_WATCH_TIMEOUT_S)
            since = int(rv) if rv not in ("", "0") else None
        except ValueError as exc:
            raise ApiError(400, f"invalid watch parameter: {exc}") from exc
        return WatchStream(self._watch_events(t, keep, since, time.monotonic() + timeout))

    def _watch_events(
        self, t: Target, keep: Callable[[Obj], bool], since: int | None, deadline: float
    ) -> Iterator[Obj]:
        if since is None:  # no resourceVersion: the current state first, as ADDED events
            objs, since = self.store.snapshot(t.rtype.plural, t.namespace)
            for obj in objs:
                if keep(obj):
                    yield {"type": "ADDED", "object": self._view(t, obj)}
        while not self._stopping.is_set() and time.monotonic() < deadline:
            try:
                events = self.store.events_after(since)
            except Gone as exc:
                yield {"type": "ERROR", "object": ApiError(410, str(exc), "Expired").status()}
                return
            for ev in events:
                since = ev.revision
                if ev.resource == t.rtype.plural:
                    kind = _watch_type(ev.type, keep, ev.object, ev.previous)
                    if kind:
                        yield {"type": kind, "object": self._view(t, ev.object)}
            yield {}  # heartbeat: lets the stream notice a client that went away
            self.store.wait(since, min(1.0, max(0.0, deadline - time.monotonic())))

    # --------------------------------------------------------------- writes
    def _decode(self, t: Target, body: bytes, content_type: str = "application/json") -> Obj:
        try:
            obj = yaml.safe_load(body) if "yaml" in content_type else json.loads(body or b"null")
        except (ValueError, yaml.YAMLError) as exc:
            raise ApiError(400, f"couldn't decode the request body: {exc}") from exc
        if not isinstance(obj, dict):
            shown = body[:200].decode(errors="replace")
            raise ApiError(400, f"Object 'Kind' is missing in '{shown}'")
        rtype, want = t.rtype, t.rtype.api_version(t.version)
        if rtype.builtin:
            obj.setdefault("apiVersion", want)
            obj.setdefault("kind", rtype.kind)
        elif "kind" not in obj or "apiVersion" not in obj:
            raise ApiError(400, "Object 'Kind' is missing in the request body")
        if obj["apiVersion"] != want:
            raise ApiError(
                400,
                f"the API version in the data ({obj['apiVersion']}) does not "
                f"match the expected API version ({want})",
            )
        if obj["kind"] != rtype.kind:
            raise ApiError(
                400,
                f"the kind in the data ({obj['kind']}) does not match the "
                f"expected kind ({rtype.kind})",
            )
        if not isinstance(obj.setdefault("metadata", {}), dict):
            raise ApiError(400, "metadata must be an object")
        if err := bt.decode_error(rtype.kind, t.version, obj):
            raise ApiError(400, err)
        return obj

    def _check_scope(self, t: Target, obj: Obj) -> None:
        meta = obj["metadata"]
        if t.rtype.namespaced:
            if meta.get("namespace") not in (None, "", t.namespace):
                raise ApiError(
                    400,
                    "the namespace of the provided object does not match "
                    "the namespace sent on the request",
                )
            meta["namespace"] = t.namespace
        else:
            meta.pop("namespace", None)
        if t.name is not None and meta.get("name") not in (None, t.name):
            raise ApiError(
                400,
                f"the name of the object ({meta.get('name')}) does not match "
                f"the name on the URL ({t.name})",
            )
        if t.name is not None:
            meta["name"] = t.name

    def _admit(self, t: Target, obj: Obj, previous: Obj | None) -> Obj:
        """Default, validate and convert to the storage version; raises 422 on errors."""
        rtype = t.rtype
        name = obj["metadata"].get("name", "")
        if rtype.plural == "deployments":
            bt.default_deployment(obj)
        elif rtype.plural == "services":
            bt.default_service(obj, self.cluster_ips, previous)
        elif rtype.plural == "pods":
            bt.default_pod(obj)
        elif rtype.plural == "namespaces":
            bt.default_namespace(obj)
        elif rtype.group == GATEWAY_API:
            self.gateway_api.apply_defaults(rtype.plural, t.version, obj)
        if rtype.validate is not None:
            errors = rtype.validate(obj, previous)
        else:
            errors = bt.check_metadata(obj["metadata"], "subdomain")
            errors += self._schema(rtype).errors(rtype.plural, t.version, obj)
        if errors:
            raise invalid(rtype, name, errors)
        obj["apiVersion"] = rtype.api_version()
        return obj

    def _schema(self, rtype: ResourceType) -> IstioValidator | GatewayApiValidator:
        """The schema of a custom resource's group."""
        return self.gateway_api if rtype.group == GATEWAY_API else self.istio

    def _create(self, t: Target, obj: Obj, dry_run: bool) -> Answer:
        self._check_scope(t, obj)
        meta = obj["metadata"]
        if meta.get("resourceVersion"):
            raise ApiError(400, "resourceVersion should not be set on objects to be created")
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + _random_suffix()
        if t.rtype.namespaced:
            self._require_namespace(t.namespace or "")
        if "status" in t.rtype.subresources:
            obj.pop("status", None)  # status is written through /status only
            if t.rtype.builtin:
                obj["status"] = {}  # built-in kinds start with an empty status, as in the API
        for key in ("uid", "creationTimestamp", "generation", "deletionTimestamp"):
            meta.pop(key, None)
        obj = self._admit(t, obj, None)
        try:
            created = self.store.create(t.rtype.plural, obj, dry_run=dry_run)
        except AlreadyExists as exc:
            raise _store_error(t.rtype, exc) from exc
        return Answer(201, self._view(t, created))

    def _require_namespace(self, namespace: str) -> None:
        if self.store.get("namespaces", None, namespace) is None:
            raise ApiError(
                404,
                f'namespaces "{namespace}" not found',
                "NotFound",
                {"name": namespace, "kind": "namespaces"},
            )

    def _update(self, t: Target, build: Callable[[Obj], Obj], dry_run: bool) -> Obj:
        """Read-modify-write through ``build(current view) -> new object``."""

        def mutate(current: Obj) -> Obj:
            new = clone(build(self._view(t, current)))
            if not isinstance(new, dict) or not isinstance(new.get("metadata"), dict):
                raise ApiError(422, "the patched object is not a valid object")
            self._check_scope(t, new)
            return self._merge_for_write(t, new, current)

        try:
            return self.store.update(
                t.rtype.plural, t.namespace, t.name or "", mutate, dry_run=dry_run
            )
        except (NotFound, Conflict) as exc:
            raise _store_error(t.rtype, exc) from exc

    def _merge_for_write(self, t: Target, new: Obj, current: Obj) -> Obj:
        """Main resource writes keep the stored status; ``/status`` writes keep the rest."""
        has_status = "status" in t.rtype.subresources
        if t.sub == "status":
            result = clone(current)
            result["metadata"]["resourceVersion"] = new["metadata"].get("resourceVersion")
            if "status" in new:
                result["status"] = new["status"]
            else:
                result.pop("status", None)
            errors = (
                []
                if t.rtype.builtin
                else self._schema(t.rtype).errors(t.rtype.plural, t.version, self._view(t, result))
            )
            if errors:
                raise invalid(t.rtype, t.name or "", errors)
            return result
        if has_status:
            new.pop("status", None)
            if "status" in current:
                new["status"] = clone(current["status"])
        status = new.pop("status", None)
        admitted = self._admit(t, new, current)
        if status is not None:
            admitted["status"] = status
        return admitted

    def _replace(self, req: Request, t: Target) -> Answer:
        body = self._decode(t, req.body, req.content_type)
        updated = self._update(t, lambda _current: body, _dry_run(req))
        return Answer(200, self._view(t, updated))

    def _patch(self, req: Request, t: Target) -> Answer:
        apply = self._patcher(req, t)
        if (
            req.content_type == "application/apply-patch+yaml"
            and self.store.get(t.rtype.plural, t.namespace, t.name or "") is None
        ):
            if t.sub is not None:
                raise not_found(t.rtype, t.name or "")
            return self._create(t, self._decode(t, req.body, "yaml"), _dry_run(req))
        updated = self._update(t, apply, _dry_run(req))
        return Answer(200, self._view(t, updated))

    def _patcher(self, req: Request, t: Target) -> Callable[[Obj], Obj]:
        ctype = req.content_type
        try:
            if ctype == "application/apply-patch+yaml":
                if not req.query.get("fieldManager"):
                    raise ApiError(400, "PATCH /apply requests require fieldManager")
                doc = yaml.safe_load(req.body)
            else:
                doc = json.loads(req.body or b"null")
        except (ValueError, yaml.YAMLError) as exc:
            raise ApiError(400, f"couldn't decode the patch: {exc}") from exc
        strategic = t.rtype.builtin and ctype in (
            "application/strategic-merge-patch+json",
            "application/apply-patch+yaml",
        )
        if ctype == "application/json-patch+json":
            fn: Callable[[Any, Any], Any] = json_patch
        elif strategic:
            fn = strategic_merge_patch
        elif ctype in ("application/merge-patch+json", "application/apply-patch+yaml"):
            fn = merge_patch
        else:
            accepted = [
                "application/json-patch+json",
                "application/merge-patch+json",
                "application/apply-patch+yaml",
            ]
            if t.rtype.builtin:
                accepted.append("application/strategic-merge-patch+json")
            raise ApiError(
                415,
                "the body of the request was in an unknown format - accepted "
                f"media types include: {', '.join(accepted)}",
                "UnsupportedMediaType",
            )
        if ctype != "application/json-patch+json" and not isinstance(doc, dict):
            raise ApiError(400, "a merge patch must be a JSON object")

        def apply(current: Obj) -> Obj:
            try:
                return fn(current, doc)
            except BadPatch as exc:
                raise ApiError(400, str(exc)) from exc
            except PatchError as exc:
                raise ApiError(422, str(exc)) from exc

        return apply

    def _delete(self, req: Request, t: Target) -> Answer:
        options = _delete_options(req.body)
        name = t.name or ""
        if t.rtype.plural == "namespaces" and name in PROTECTED_NAMESPACES:
            raise ApiError(
                403,
                f'namespaces "{name}" is forbidden: this namespace may not be deleted',
                "Forbidden",
                {"name": name, "kind": "namespaces"},
            )
        current = self._get(t)
        pre = options.get("preconditions") or {}
        if pre.get("uid") and pre["uid"] != current["metadata"]["uid"]:
            raise _store_error(t.rtype, Conflict(t.rtype.plural, name))
        if (
            pre.get("resourceVersion")
            and pre["resourceVersion"] != current["metadata"]["resourceVersion"]
        ):
            raise _store_error(t.rtype, Conflict(t.rtype.plural, name))
        dry_run = _dry_run(req) or "All" in (options.get("dryRun") or [])
        try:
            gone = self.store.delete(t.rtype.plural, t.namespace, name, dry_run=dry_run)
        except NotFound as exc:
            raise _store_error(t.rtype, exc) from exc
        if t.rtype.plural == "namespaces" and not dry_run:
            self._empty_namespace(name)
        if t.rtype.returns_deleted_object:
            return Answer(200, self._view(t, gone))
        details = _details(t.rtype, name) | {"uid": gone["metadata"]["uid"]}
        return Answer(
            200,
            {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Success",
                "details": details,
            },
        )

    def _empty_namespace(self, namespace: str) -> None:
        # Deployments first, so that the controller does not bring their Pods back.
        for plural, rtype in sorted(BY_PLURAL.items(), key=lambda i: i[0] != "deployments"):
            if rtype.namespaced:
                for obj in self.store.snapshot(plural, namespace)[0]:
                    with contextlib.suppress(NotFound):
                        self.store.delete(plural, namespace, obj["metadata"]["name"])

    def _delete_collection(self, req: Request, t: Target) -> Answer:
        keep = self._filter(req, t)
        objs, _ = self.store.snapshot(t.rtype.plural, t.namespace)
        items = []
        for obj in objs:
            if keep(obj):
                with contextlib.suppress(NotFound):
                    items.append(
                        self._view(
                            t,
                            self.store.delete(
                                t.rtype.plural,
                                t.namespace,
                                obj["metadata"]["name"],
                                dry_run=_dry_run(req),
                            ),
                        )
                    )
        return Answer(
            200,
            {
                "kind": f"{t.rtype.kind}List",
                "apiVersion": t.rtype.api_version(t.version),
                "metadata": {"resourceVersion": str(self.store.revision())},
                "items": items,
            },
        )

    # ---------------------------------------------------------------- scale
    def _scale(self, req: Request, t: Target) -> Answer:
        if req.method == "GET":
            return Answer(200, _scale_view(self._get(t)))
        if req.method not in ("PUT", "PATCH"):
            raise ApiError(
                405,
                "the server does not allow this method on the requested resource",
                "MethodNotAllowed",
            )
        if req.method == "PUT":
            try:
                body = json.loads(req.body or b"null")
            except ValueError as exc:
                raise ApiError(400, f"couldn't decode the request body: {exc}") from exc
            if not isinstance(body, dict):
                raise ApiError(400, "Object 'Kind' is missing in the request body")

            def new_scale(scale: Obj) -> Obj:
                return body
        else:
            new_scale = self._patcher(req, t)
        main = Target(t.rtype, t.version, t.namespace, t.name, None)

        def build(current: Obj) -> Obj:
            scale = new_scale(_scale_view(current))
            replicas = (scale.get("spec") or {}).get("replicas")
            if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
                raise invalid(
                    t.rtype,
                    t.name or "",
                    [bt.invalid("spec.replicas", replicas, "must be greater than or equal to 0")],
                )
            current["spec"]["replicas"] = replicas
            rv = (scale.get("metadata") or {}).get("resourceVersion")
            current["metadata"]["resourceVersion"] = rv or None
            return current

        updated = self._update(main, build, _dry_run(req))
        return Answer(200, _scale_view(updated))


# ----------------------------------------------------------------- helpers
def _truthy(value: str | None) -> bool:
    return (value or "").lower() in ("true", "1")


def _dry_run(req: Request) -> bool:
    return req.query.get("dryRun") == "All"


def _random_suffix(n: int = 5) -> str:
    alphabet = "bcdfghjklmnpqrstvwxz2456789"
    return "".join(secrets.choice(alphabet) for _ in range(n))


def _delete_options(body: bytes) -> Obj:
    if not body:
        return {}
    try:
        options = json.loads(body)
    except ValueError as exc:
        raise ApiError(400, f"couldn't decode DeleteOptions: {exc}") from exc
    return options if isinstance(options, dict) else {}


def _watch_type(
    kind: str, keep: Callable[[Obj], bool], obj: Obj, previous: Obj | None
) -> str | None:
    """The event a filtered watch sees: objects entering or leaving the selection
    appear as ADDED or DELETED, as with the real API's filtered watches."""
    if kind == "DELETED":
        return "DELETED" if keep(obj) else None
    now, before = keep(obj), previous is not None and keep(previous)
    if kind == "ADDED" or not before:
        return "ADDED" if now else None
    return "MODIFIED" if now else "DELETED"


def _scale_view(deployment: Obj) -> Obj:
    meta = deployment["metadata"]
    selector = to_string(from_label_selector(deployment.get("spec", {}).get("selector")))
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            k: meta[k]
            for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
            if k in meta
        },
        "spec": {"replicas": deployment.get("spec", {}).get("replicas", 0)},
        "status": {
            "replicas": deployment.get("status", {}).get("replicas", 0),
            "selector": selector,
        },
    }


# --------------------------------------------------------------- HTTP layer
def _handler(api: ApiServer) -> type[RequestHandler]:
    """The handler class of one API server."""
    return type("ApiHandler", (_ApiHandler,), {"api": api})


class _ApiHandler(RequestHandler):
    server_version = "sandbox-apiserver/1"
    api: ApiServer

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_PUT(self) -> None:
        self._serve()

    def do_PATCH(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()

    def _serve(self) -> None:
        api = self.api
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""

        def record(status: int) -> None:
            api.record(self.command, url.path, url.query, status)

        if api.chaos is not None and api.chaos.intercept(self, record):
            return  # the injected fault answered, or hung up
        ctype = (self.headers.get("Content-Type") or "application/json").split(";")[0].strip()
        req = Request(
            self.command,
            url.path,
            dict(parse_qsl(url.query, keep_blank_values=True)),
            ctype.lower(),
            body,
        )
        try:
            answer = api.handle(req)
        except Exception as exc:  # keep serving; answer like the API server's panic handler
            answer = Answer(500, ApiError(500, f"internal error: {exc!r}").status())
        status = 200 if isinstance(answer, WatchStream) else answer.code
        record(status)
        if isinstance(answer, WatchStream):
            self._stream(answer)
        else:
            self._send(answer)

    def _send(self, answer: Answer) -> None:
        if isinstance(answer.body, str):
            payload = answer.body.encode()
        else:
            payload = json.dumps(answer.body, separators=(",", ":")).encode()
        self.send_body(answer.code, payload, answer.content_type)

    def _stream(self, stream: WatchStream) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.flush()
        try:
            for event in stream.events:
                if not event:
                    if self._peer_closed():
                        self.close_connection = True
                        return
                    continue
                data = json.dumps(event, separators=(",", ":")).encode() + b"\n"
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except OSError:  # the watch client went away
            self.close_connection = True

    def _peer_closed(self) -> bool:
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True
