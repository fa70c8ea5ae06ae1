"""Synthetic mesh traffic: productpage calling reviews (or any services) at a steady rate.

Requests are not real HTTP. Each is routed with :mod:`sandbox.mesh.routing` over the
current view of the cluster, answered with the chosen version's behaviour from the scenario,
and recorded in Istio's metrics (:mod:`sandbox.mesh.istio_metrics`).

The background thread wakes 20 times a second and sends the requests due since it
started (``rps`` per service, paced on the monotonic clock). When it falls behind by more
than a second's worth it drops the backlog instead of bursting.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import Counter, deque
from collections.abc import Sequence
from typing import Any

from sandbox.mesh.cluster_view import ClusterView
from sandbox.mesh.istio_metrics import IstioMetrics, Source
from sandbox.mesh.routing import MeshRouter, Request, RouteResult, RoutingTable
from sandbox.mesh.scenarios import Scenario, VersionBehaviour, load_scenario

log = logging.getLogger(__name__)

TICK_S = 0.05
MAX_BACKLOG_S = 1.0
HISTORY_S = 120.0
JASON = {"end-user": "jason"}


def source_identity(workload: str, namespace: str) -> Source:
    """App and version from a workload name such as ``productpage-v1``."""
    app, _, version = workload.rpartition("-")
    if app and version[:1] == "v" and version[1:2].isdigit():
        return Source(workload, namespace, app, version)
    return Source(workload, namespace, workload, "unknown")


def behaviour_for(scenario: Scenario, router: MeshRouter, result: RouteResult) -> VersionBehaviour:
    """The scenario's behaviour for the workload that served ``result``, phases included."""
    ready_for = router.ready_for(
        result.workload_namespace or router.namespace, result.workload or ""
    )
    return scenario.behaviour(
        result.version or "", workload=result.workload, ready_for_s=ready_for or 0.0
    )


class TrafficSimulator:
    """Steady synthetic traffic from one source workload to one or more services.

    ``rps`` is per service; ``jason_share`` of the requests carry ``end-user: jason``.
    """

    def __init__(
        self,
        view: ClusterView,
        scenario: Scenario | str,
        *,
        namespace: str = "default",
        service: str | Sequence[str] = "reviews",
        source_workload: str = "productpage-v1",
        rps: float = 50.0,
        jason_share: float = 0.1,
        seed: int | None = None,
        metrics: IstioMetrics | None = None,
        router: MeshRouter | None = None,
    ) -> None:
        self.scenario = load_scenario(scenario) if isinstance(scenario, str) else scenario
        self.namespace = namespace
        self.services = [service] if isinstance(service, str) else list(service)
        self.rps = float(rps)
        self.jason_share = float(jason_share)
        self.router = router or MeshRouter(view, namespace)
        self.metrics = metrics or IstioMetrics()
        self.source = source_identity(source_workload, namespace)
        self._rng = random.Random(seed)
        self._requests = {svc: self._request_pair(svc) for svc in self.services}
        self._history: deque[tuple[float, Counter[tuple[str, str]]]] = deque()
        self._history_lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.sent = 0

    def _request_pair(self, service: str) -> tuple[Request, Request]:
        labels = {"app": self.source.app, "version": self.source.version}
        plain = Request(
            service, "/reviews/0", None, source_labels=labels, source_namespace=self.namespace
        )
        jason = Request(
            service, "/reviews/0", JASON, source_labels=labels, source_namespace=self.namespace
        )
        return plain, jason

    # lifecycle

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="traffic-simulator", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> TrafficSimulator:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        start = time.monotonic()
        done = 0  # requests sent per service since start
        while not self._stop.wait(TICK_S):
            due = int((time.monotonic() - start) * self.rps) - done
            backlog_cap = max(1, int(self.rps * MAX_BACKLOG_S))
            if due > backlog_cap:
                done += due - backlog_cap  # too far behind: skip, never burst
                due = backlog_cap
            if due > 0:
                try:
                    self.send(due)
                except Exception:  # keep the traffic flowing; the next tick retries
                    log.exception("simulated traffic tick failed")
                done += due

    # traffic

    def send(self, count: int) -> None:
        """Send ``count`` requests to each service now (the thread calls this every tick)."""
        with self._send_lock:
            table = self.router.table()
            rng, records = self._rng, []
            outcomes: Counter[tuple[str, str]] = Counter()
            behaviours: dict[int, VersionBehaviour] = {}
            for service, (plain, jason) in self._requests.items():
                for _ in range(count):
                    request = jason if rng.random() < self.jason_share else plain
                    result = table.route(request, rng)
                    status, latency = self._answer(result, behaviours, rng)
                    records.append((self.source, result, status, latency))
                    outcomes[(service, result.outcome)] += 1
            self.metrics.record_many(records)
            self.sent += len(records)
        self._remember(outcomes)

    def _answer(
        self, result: RouteResult, cache: dict[int, VersionBehaviour], rng: random.Random
    ) -> tuple[int, float]:
        if result.status is not None:
            return result.status, rng.uniform(0.1, 0.5)  # the caller's proxy answers at once
        # Results are shared objects of one routing table, so their id is a cheap key.
        behaviour = cache.get(id(result))
        if behaviour is None:
            behaviour = cache[id(result)] = self.behaviour_of(result)
        return behaviour.sample(rng)

    def behaviour_of(self, result: RouteResult) -> VersionBehaviour:
        return behaviour_for(self.scenario, self.router, result)

    def _remember(self, outcomes: Counter[tuple[str, str]]) -> None:
        now = time.monotonic()
        with self._history_lock:
            self._history.append((now, outcomes))
            while self._history and self._history[0][0] < now - HISTORY_S:
                self._history.popleft()

    # observation

    def metrics_text(self) -> bytes:
        """All Istio metrics, in Prometheus text format."""
        return self.metrics.render()

    def split(self, window_s: float = 2.0, service: str | None = None) -> dict[str, float]:
        """Share of requests per outcome (workload, or "503"/"404") over the last window."""
        since = time.monotonic() - window_s
        totals: Counter[str] = Counter()
        with self._history_lock:
            for at, outcomes in reversed(self._history):
                if at < since:
                    break
                for (svc, outcome), n in outcomes.items():
                    if service is None or svc == service:
                        totals[outcome] += n
        count = sum(totals.values())
        return {k: v / count for k, v in totals.items()} if count else {}

    def sample_routing(self) -> dict[str, Any]:
        """The routing table now, and the exact split each kind of request should see."""
        table: RoutingTable = self.router.table()
        expected = {
            svc: {"default": table.distribution(plain), "jason": table.distribution(jason)}
            for svc, (plain, jason) in self._requests.items()
        }
        return {"revision": table.revision, "expected": expected, "table": table.snapshot()}
