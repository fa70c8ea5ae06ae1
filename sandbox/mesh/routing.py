"""Istio sidecar routing, emulated over a view of the cluster.

Given the VirtualServices, DestinationRules, HTTPRoutes, Services and Deployments in the
view (``sandbox.mesh.cluster_view``), a request ``(host, path, headers)`` is routed as an
Istio sidecar would route it:

* Host names: ``reviews``, ``reviews.<ns>``, ``reviews.<ns>.svc`` and
  ``reviews.<ns>.svc.cluster.local`` (an optional ``:port`` is ignored) all name the
  Service ``reviews``; short names are relative to the caller's namespace, and a short
  name in an Istio object is relative to that object's namespace.
* A VirtualService applies when one of its ``spec.hosts`` names the service and it is
  bound to the mesh (no ``gateways``, or ``mesh`` among them). Several VirtualServices for
  one host are merged in creation order (then by name); their routes keep their order.
* ``spec.http`` routes are tried in order and the first match wins. The entries of a
  route's ``match`` list are OR-ed; the conditions of one entry are AND-ed. Supported:
  ``uri``, ``headers``, ``withoutHeaders``, ``queryParams``, ``method``, ``authority``,
  ``scheme``, ``ignoreUriCase``, ``sourceLabels``, ``sourceNamespace`` and ``gateways``
  (``port`` and ``statPrefix`` are ignored). A string match is ``exact``, ``prefix`` or
  ``regex`` (the regex must match the whole value, as RE2 in Envoy does); an empty match
  on a header tests its presence (absence under ``withoutHeaders``). Header names are
  case-insensitive.
* Weights: a destination receives ``weight / sum(weights)`` of the route's traffic; a
  missing weight counts as 0, except that a lone destination receives everything. Several
  destinations whose weights sum to 0 are an invalid route, which Istio's validation
  rejects; here such a route answers 503.
* A destination's ``subset`` is looked up in the DestinationRules for its host; its labels
  plus the Service selector pick the Deployments (by pod template labels) that serve it.
  Traffic is spread over ready Deployments (``status.readyReplicas > 0``) in proportion to
  their ready replicas. Without a VirtualService, the Service's ready Deployments share
  the traffic the same way.
* A Service that HTTPRoutes bind to (the Gateway API in the mesh, see
  ``sandbox.mesh.gateway_routes``) is routed by them instead of by VirtualServices: the
  most specific match wins, and the weighted ``backendRefs`` are Services whose ready
  Deployments serve. A backend that is not a Service, or a rule whose weights are all 0,
  answers 500, as the Gateway API asks.

Failures: no ready endpoint gives 503 with response flag ``UH`` (no healthy upstream); a
subset that no DestinationRule defines, or a destination host that is not a Service,
gives 503 with ``NC`` (Envoy's "cluster not found"); a request that no route matches, or
whose host is unknown, gives 404 with ``NR``.

The routing table is rebuilt from the view only when ``view.revision()`` changes.
"""

from __future__ import annotations

import bisect
import copy
import functools
import math
import random
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sandbox.mesh.cluster_view import ClusterView
from sandbox.mesh.gateway_routes import GatewayRule, mesh_rules

CLUSTER_DOMAIN = "svc.cluster.local"
UNKNOWN = "unknown"


ServiceKey = tuple[str, str]  # (namespace, name)
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RouteResult:
    """Where one request went. ``status`` is None when it was forwarded to ``workload``."""

    status: int | None
    workload: str | None
    version: str | None
    destination_service: str  # FQDN, e.g. reviews.default.svc.cluster.local
    subset: str | None
    reason: str
    response_flags: str = "-"
    workload_namespace: str | None = None
    app: str | None = None
    destination_service_name: str = ""
    destination_service_namespace: str = ""

    @property
    def outcome(self) -> str:
        """The workload that served the request, or the status the mesh answered."""
        return (self.workload or UNKNOWN) if self.status is None else str(self.status)


class Request:
    """A request as the sidecar sees it; header names are lower-cased once, here."""

    __slots__ = (
        "headers",
        "host",
        "method",
        "path",
        "query",
        "scheme",
        "source_labels",
        "source_namespace",
        "uri",
    )

    def __init__(
        self,
        host: str,
        path: str = "/",
        headers: Mapping[str, str] | None = None,
        *,
        method: str = "GET",
        scheme: str = "http",
        source_labels: Mapping[str, str] | None = None,
        source_namespace: str | None = None,
    ) -> None:
        self.host = host
        self.path = path or "/"
        self.uri, _, raw_query = self.path.partition("?")
        self.query = _parse_query(raw_query)
        self.headers = {k.lower(): v for k, v in (headers or {}).items()}
        self.method = method.upper()
        self.scheme = scheme
        self.source_labels = dict(source_labels or {})
        self.source_namespace = source_namespace


def _parse_query(raw: str) -> dict[str, str]:
    pairs = (part.partition("=") for part in raw.split("&") if part)
    return {k: v for k, _, v in pairs}


def fqdn(namespace: str, name: str) -> str:
    return f"{name}.{namespace}.{CLUSTER_DOMAIN}"


@functools.lru_cache(maxsize=4096)
def parse_host(host: str, default_namespace: str) -> ServiceKey | None:
    """The Service a host name designates, or None when it names no in-cluster service."""
    text = host.strip().lower().rstrip(".")
    if not text or text.startswith("["):
        return None
    text = text.split(":", 1)[0]
    parts = text.split(".")
    if len(parts) == 1:
        return default_namespace, parts[0]
    if len(parts) == 2:
        return parts[1], parts[0]
    if parts[2] == "svc" and parts[3:] in ([], ["cluster", "local"]):
        return parts[1], parts[0]
    return None


# --- string matching -------------------------------------------------------------------

Predicate = Callable[[Request], bool]


def _string_matcher(
    spec: Mapping[str, Any] | None, ignore_case: bool = False
) -> Callable[[str | None], bool]:
    """A StringMatch; an empty one only asks that the value be present."""
    if not spec:
        return lambda value: value is not None
    if "exact" in spec:
        want = str(spec["exact"])
        if ignore_case:
            want = want.lower()
            return lambda value: value is not None and value.lower() == want
        return lambda value: value == want
    if "prefix" in spec:
        prefix = str(spec["prefix"])
        if ignore_case:
            prefix = prefix.lower()
            return lambda value: value is not None and value.lower().startswith(prefix)
        return lambda value: value is not None and value.startswith(prefix)
    if "regex" in spec:
        pattern = re.compile(str(spec["regex"]), re.IGNORECASE if ignore_case else 0)
        return lambda value: value is not None and pattern.fullmatch(value) is not None
    raise ValueError(f"unsupported string match {dict(spec)!r}")


def _header_predicates(headers: Mapping[str, Any], negate: bool) -> list[Predicate]:
    preds: list[Predicate] = []
    for name, spec in headers.items():
        key = name.lower()
        test = _string_matcher(spec)
        if negate:
            preds.append(lambda r, k=key, t=test: not t(r.headers.get(k)))
        else:
            preds.append(lambda r, k=key, t=test: t(r.headers.get(k)))
    return preds


def _source_labels_predicate(labels: Mapping[str, str]) -> Predicate:
    wanted = dict(labels)
    return lambda r: all(r.source_labels.get(k) == v for k, v in wanted.items())


def _match_predicates(match: Mapping[str, Any]) -> list[Predicate] | None:
    """The AND-ed conditions of one HTTPMatchRequest; None if it never applies to the mesh."""
    gateways = match.get("gateways")
    if gateways and "mesh" not in gateways:
        return None
    preds: list[Predicate] = []
    if "uri" in match:
        uri_test = _string_matcher(match["uri"], bool(match.get("ignoreUriCase")))
        preds.append(lambda r: uri_test(r.uri))
    if "method" in match:
        method_test = _string_matcher(match["method"])
        preds.append(lambda r: method_test(r.method))
    if "scheme" in match:
        scheme_test = _string_matcher(match["scheme"])
        preds.append(lambda r: scheme_test(r.scheme))
    if "authority" in match:
        authority_test = _string_matcher(match["authority"])
        preds.append(lambda r: authority_test(r.host))
    preds += _header_predicates(match.get("headers") or {}, negate=False)
    preds += _header_predicates(match.get("withoutHeaders") or {}, negate=True)
    for name, spec in (match.get("queryParams") or {}).items():
        query_test = _string_matcher(spec)
        preds.append(lambda r, n=name, t=query_test: t(r.query.get(n)))
    if match.get("sourceLabels"):
        preds.append(_source_labels_predicate(match["sourceLabels"]))
    if match.get("sourceNamespace"):
        source_ns = match["sourceNamespace"]
        preds.append(lambda r: r.source_namespace == source_ns)
    return preds


def _route_predicate(matches: list[Mapping[str, Any]] | None) -> Predicate:
    if not matches:
        return lambda r: True
    alternatives = [p for p in (_match_predicates(m) for m in matches) if p is not None]
    if not alternatives:
        return lambda r: False
    return lambda r: any(all(p(r) for p in preds) for preds in alternatives)


# --- endpoints -------------------------------------------------------------------------


@dataclass(frozen=True)
class Workload:
    namespace: str
    name: str
    labels: dict[str, str]
    ready_replicas: int

    @property
    def version(self) -> str:
        return self.labels.get("version", UNKNOWN)

    @property
    def app(self) -> str:
        return self.labels.get("app", UNKNOWN)


def _workload(deployment: Mapping[str, Any]) -> Workload:
    meta = deployment.get("metadata") or {}
    spec = deployment.get("spec") or {}
    labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
    ready = int((deployment.get("status") or {}).get("readyReplicas") or 0)
    if meta.get("deletionTimestamp"):
        ready = 0
    return Workload(meta.get("namespace") or "default", meta["name"], dict(labels), ready)


class _Weighted(Generic[T]):
    """Weighted items; ``pick`` takes one with a uniform draw in [0, 1)."""

    __slots__ = ("cumulative", "items", "weights")

    def __init__(self, items: list[T], weights: list[float]) -> None:
        self.items, self.weights = items, weights
        total, acc = sum(weights), 0.0
        self.cumulative: list[float] = []
        for w in weights:
            acc += w / total
            self.cumulative.append(acc)
        # Rounding must not let a draw fall past the last item that has weight.
        last = max(i for i, w in enumerate(weights) if w > 0)
        self.cumulative[last:] = [math.inf] * (len(weights) - last)

    def pick(self, draw: float) -> T:
        return self.items[bisect.bisect_right(self.cumulative, draw)]

    def shares(self) -> list[tuple[T, float]]:
        total = sum(self.weights)
        return [(item, w / total) for item, w in zip(self.items, self.weights, strict=True)]


Endpoints = _Weighted[RouteResult]


def _answer(
    status: int,
    flags: str,
    reason: str,
    svc: ServiceKey | None,
    host: str = "",
    subset: str | None = None,
) -> Endpoints:
    """A fixed answer from the mesh itself (no workload involved)."""
    ns, name = svc or ("", "")
    service = fqdn(ns, name) if svc else host
    result = RouteResult(
        status,
        None,
        None,
        service,
        subset,
        reason,
        flags,
        destination_service_name=name or host,
        destination_service_namespace=ns,
    )
    return _Weighted([result], [1.0])


def _forward(svc: ServiceKey, subset: str | None, workloads: list[Workload]) -> Endpoints:
    ns, name = svc
    results = [
        RouteResult(
            None,
            w.name,
            w.version,
            fqdn(ns, name),
            subset,
            "forwarded",
            "-",
            w.namespace,
            w.app,
            name,
            ns,
        )
        for w in workloads
    ]
    return _Weighted(results, [float(w.ready_replicas) for w in workloads])


# --- the table -------------------------------------------------------------------------


@dataclass
class _CompiledRoute:
    name: str
    predicate: Predicate
    # Either weighted destinations, or a fixed answer (direct response, invalid weights).
    destinations: _Weighted[Endpoints] | None
    fixed: Endpoints | None = None


def _by_creation(objs: Iterable[dict]) -> list[dict]:
    return sorted(
        objs,
        key=lambda o: (o["metadata"].get("creationTimestamp") or "", o["metadata"].get("name", "")),
    )


class RoutingTable:
    """An immutable snapshot of the mesh's routes at one revision of the view."""

    def __init__(
        self,
        revision: int,
        services: list[dict],
        deployments: list[dict],
        virtual_services: list[dict],
        destination_rules: list[dict],
        default_namespace: str = "default",
        http_routes: list[dict] | None = None,
    ) -> None:
        self.revision = revision
        self.default_namespace = default_namespace
        self.selectors: dict[ServiceKey, dict[str, str]] = {
            (s["metadata"].get("namespace") or "default", s["metadata"]["name"]): dict(
                (s.get("spec") or {}).get("selector") or {}
            )
            for s in services
        }
        self.workloads = [_workload(d) for d in deployments]
        self.subsets = self._subsets(destination_rules)
        self.routes: dict[ServiceKey, list[_CompiledRoute]] = {}
        self.route_specs: dict[ServiceKey, list[dict]] = {}
        self.http_route_specs: dict[ServiceKey, list[dict]] = {}
        self._compile_virtual_services(virtual_services)
        self._compile_http_routes(http_routes or [])
        self._service_endpoints = {svc: self._endpoints(svc, None) for svc in self.selectors}

    # building

    def _subsets(self, rules: list[dict]) -> dict[ServiceKey, dict[str, dict[str, str]]]:
        subsets: dict[ServiceKey, dict[str, dict[str, str]]] = {}
        for dr in _by_creation(rules):
            ns = dr["metadata"].get("namespace") or "default"
            svc = parse_host((dr.get("spec") or {}).get("host", ""), ns)
            if svc is None:
                continue
            known = subsets.setdefault(svc, {})
            for subset in (dr.get("spec") or {}).get("subsets") or []:
                # The first definition of a subset name wins, as when Istio merges rules.
                known.setdefault(subset["name"], dict(subset.get("labels") or {}))
        return subsets

    def _compile_virtual_services(self, virtual_services: list[dict]) -> None:
        for vs in _by_creation(virtual_services):
            spec = vs.get("spec") or {}
            gateways = spec.get("gateways")
            if gateways and "mesh" not in gateways:
                continue
            ns = vs["metadata"].get("namespace") or "default"
            targets = {parse_host(host, ns) for host in spec.get("hosts") or []}
            for svc in sorted(t for t in targets if t is not None):
                for http in spec.get("http") or []:
                    self.routes.setdefault(svc, []).append(self._compile_route(http, ns, svc))
                    self.route_specs.setdefault(svc, []).append(http)

    def _compile_http_routes(self, http_routes: list[dict]) -> None:
        for svc, rules in mesh_rules(http_routes).items():
            # A Service with HTTPRoutes attached is routed by them; its VirtualServices
            # no longer apply.
            self.routes[svc] = [self._compile_gateway_rule(rule, svc) for rule in rules]
            self.route_specs.pop(svc, None)
            self.http_route_specs[svc] = [rule.spec for rule in rules]

    def _compile_gateway_rule(self, rule: GatewayRule, svc: ServiceKey) -> _CompiledRoute:
        choices, weights = [], []
        for backend in rule.backends:
            if backend.service is None or backend.service not in self.selectors:
                # The Gateway API's answer for what would have gone to an invalid backend.
                choices.append(
                    _answer(500, "-", "invalid backend: not a service", backend.service or svc)
                )
            else:
                choices.append(self._endpoints(backend.service, None))
            weights.append(max(backend.weight, 0.0))
        if not choices or sum(weights) <= 0:
            bad = _answer(500, "-", "no backend with a weight above 0", svc)
            return _CompiledRoute(rule.name, rule.predicate, None, bad)
        return _CompiledRoute(rule.name, rule.predicate, _Weighted(choices, weights))

    def _compile_route(self, http: Mapping[str, Any], ns: str, svc: ServiceKey) -> _CompiledRoute:
        name, predicate = http.get("name", ""), _route_predicate(http.get("match"))
        fixed = self._fixed_answer(http, svc)
        if fixed is not None:
            return _CompiledRoute(name, predicate, None, fixed)
        choices, weights = [], []
        for d in http.get("route") or []:
            dest = d.get("destination") or {}
            choices.append(
                self._destination(
                    parse_host(dest.get("host", ""), ns), dest.get("subset"), dest.get("host", "")
                )
            )
            weights.append(float(d.get("weight") or 0))
        if len(choices) == 1:
            weights = [1.0]  # a lone destination takes all traffic, whatever its weight
        if not choices or sum(weights) <= 0:
            bad = _answer(503, "NR", "invalid route: destination weights sum to 0", svc)
            return _CompiledRoute(name, predicate, None, bad)
        return _CompiledRoute(name, predicate, _Weighted(choices, weights))

    @staticmethod
    def _fixed_answer(http: Mapping[str, Any], svc: ServiceKey) -> Endpoints | None:
        if "directResponse" in http:
            status = int((http["directResponse"] or {}).get("status", 200))
            return _answer(status, "-", "direct response", svc)
        if "redirect" in http:
            status = int((http["redirect"] or {}).get("redirectCode", 301))
            return _answer(status, "-", "redirect", svc)
        return None

    def _destination(self, svc: ServiceKey | None, subset: str | None, host: str) -> Endpoints:
        if svc is None or svc not in self.selectors:
            return _answer(
                503, "NC", "cluster not found: destination host is not a service", svc, host, subset
            )
        if subset is not None and subset not in self.subsets.get(svc, {}):
            return _answer(
                503, "NC", f"cluster not found: subset {subset!r} is not defined", svc, host, subset
            )
        return self._endpoints(svc, subset)

    def _endpoints(self, svc: ServiceKey, subset: str | None) -> Endpoints:
        selector = self.selectors[svc]
        wanted = dict(selector)
        if subset is not None:
            wanted.update(self.subsets[svc][subset])
        ready = [
            w
            for w in self.workloads
            if w.namespace == svc[0]
            and selector
            and w.ready_replicas > 0
            and all(w.labels.get(k) == v for k, v in wanted.items())
        ]
        if not ready:
            return _answer(503, "UH", "no healthy upstream", svc, subset=subset)
        return _forward(svc, subset, ready)

    # routing

    def _select(self, request: Request) -> _Weighted[Endpoints] | Endpoints:
        """The matching route's destinations, or the endpoints/answer that serve directly."""
        svc = parse_host(request.host, self.default_namespace)
        if svc is None:
            return _answer(404, "NR", "no route: unknown host", None, request.host)
        routes = self.routes.get(svc)
        if routes is None:
            if svc not in self.selectors:
                return _answer(404, "NR", "no route: unknown host", svc)
            return self._service_endpoints[svc]
        for route in routes:
            if route.predicate(request):
                return route.fixed if route.destinations is None else route.destinations
        return _answer(404, "NR", "no route matched", svc)

    def route(self, request: Request, rng: random.Random | None = None) -> RouteResult:
        draw = (rng or random).random
        chosen = self._select(request).pick(draw())
        if isinstance(chosen, RouteResult):
            return chosen
        return chosen.pick(draw())

    def distribution(self, request: Request) -> dict[str, float]:
        """The exact share of each outcome (workload, or status as text) for this request."""
        out: dict[str, float] = {}
        for item, share in self._select(request).shares():
            pairs = [(item, 1.0)] if isinstance(item, RouteResult) else item.shares()
            for result, sub in pairs:
                if share * sub <= 0:
                    continue
                out[result.outcome] = out.get(result.outcome, 0.0) + share * sub
        return out

    def ready_workloads(self) -> dict[tuple[str, str], Workload]:
        return {(w.namespace, w.name): w for w in self.workloads if w.ready_replicas > 0}

    def snapshot(self) -> dict[str, Any]:
        """A plain description of the table, for invariant checks and debugging."""
        return {
            "revision": self.revision,
            "services": {fqdn(*svc): dict(sel) for svc, sel in self.selectors.items()},
            # Copies: the specs may be the view's shared objects.
            "virtualServiceRoutes": {
                fqdn(*svc): copy.deepcopy(specs) for svc, specs in self.route_specs.items()
            },
            "httpRoutes": {
                fqdn(*svc): copy.deepcopy(specs) for svc, specs in self.http_route_specs.items()
            },
            "subsets": {fqdn(*svc): dict(s) for svc, s in self.subsets.items()},
            "readyWorkloads": {
                f"{ns}/{name}": w.ready_replicas for (ns, name), w in self.ready_workloads().items()
            },
        }


class MeshRouter:
    """Routes requests over a view of the cluster, rebuilding its table when the view's
    revision moves.

    It also remembers since when each workload has been ready, so scenarios can start a
    fault some time after a version became ready.
    """

    def __init__(self, view: ClusterView, namespace: str = "default") -> None:
        self.view = view
        self.namespace = namespace
        self._lock = threading.Lock()
        self._table: RoutingTable | None = None
        self._ready_since: dict[tuple[str, str], float] = {}
        self._became_ready: dict[tuple[str, str], list[float]] = {}

    def table(self) -> RoutingTable:
        """The current table; costs one ``view.revision()`` call when nothing changed."""
        revision = self.view.revision()
        table = self._table
        if table is not None and table.revision == revision:
            return table
        with self._lock:
            if self._table is None or self._table.revision != revision:
                self._table = self._build(revision)
                self._track_readiness(self._table)
            return self._table

    def _build(self, revision: int) -> RoutingTable:
        # The table only reads the objects, so a view's shared snapshot spares the copies.
        snapshot = getattr(self.view, "snapshot", None)

        def objects(resource: str) -> list[dict]:
            return snapshot(resource)[0] if snapshot else self.view.list(resource)

        return RoutingTable(
            revision,
            objects("services"),
            objects("deployments"),
            objects("virtualservices"),
            objects("destinationrules"),
            self.namespace,
            objects("httproutes"),
        )

    def _track_readiness(self, table: RoutingTable) -> None:
        now = time.monotonic()
        ready = table.ready_workloads()
        for key in ready.keys() - self._ready_since.keys():
            self._became_ready.setdefault(key, []).append(now)
        self._ready_since = {key: self._ready_since.get(key, now) for key in ready}

    def readiness_history(self) -> dict[str, list[float]]:
        """When each workload turned ready ("namespace/name": monotonic times, oldest first).

        The clock ``after`` faults count from; kept after a workload is gone, so a benchmark
        can time a rollback from the fault's true onset.
        """
        self.table()
        with self._lock:
            return {f"{ns}/{name}": list(times) for (ns, name), times in self._became_ready.items()}

    def ready_for(self, namespace: str, workload: str) -> float | None:
        """Seconds since the workload was first seen ready (None when it is not ready)."""
        since = self._ready_since.get((namespace, workload))
        return None if since is None else time.monotonic() - since

    def route(
        self,
        host: str,
        path: str = "/",
        headers: Mapping[str, str] | None = None,
        rng: random.Random | None = None,
        **request_fields: Any,
    ) -> RouteResult:
        return self.table().route(Request(host, path, headers, **request_fields), rng)
