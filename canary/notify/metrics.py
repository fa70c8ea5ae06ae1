"""Release metrics for dashboards, fed by release events (a notifier).

    canary_release_status{namespace,service}            0 running, 1 promoted, 2 rolled back
    canary_release_weight{namespace,service}            percent of traffic on the canary
    canary_release_phase_info{namespace,service,phase}  1 for the phase the release is in
    canary_release_duration_seconds{namespace,service}  since the start; the length once over
    canary_release_decisions_total{namespace,service,decision}  analysis verdicts

The status values are Flagger's (`flagger_canary_status`), so dashboards made for it read
these the same way. The process running releases serves them on `CANARY_METRICS_PORT`
(address `CANARY_METRICS_ADDR`, default 127.0.0.1), or pushes them after every event to
the Pushgateway at `CANARY_PUSHGATEWAY_URL`, one group per service: flow runs in
Kubernetes Jobs live too briefly to be scraped.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.metrics_core import Metric

from canary.events import EventKind, ReleaseEvent

log = logging.getLogger(__name__)

RUNNING, PROMOTED, ROLLED_BACK = 0, 1, 2
PUSH_JOB = "canary-release"
_SERVICE = ("namespace", "service")


@dataclass
class _Release:
    release_id: str
    started: datetime
    phase: str | None = None


@dataclass
class MetricsNotifier:
    """Keeps the metrics of every release it hears of, one series set per service."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    pushgateway: str | None = None

    def __post_init__(self) -> None:
        r = self.registry
        self.status = Gauge(
            "canary_release_status",
            "Release status: 0 running, 1 promoted, 2 rolled back",
            _SERVICE,
            registry=r,
        )
        self.weight = Gauge(
            "canary_release_weight", "Percent of traffic on the canary", _SERVICE, registry=r
        )
        self.phase = Gauge(
            "canary_release_phase_info",
            "1 for the phase the release is in",
            (*_SERVICE, "phase"),
            registry=r,
        )
        self.duration = Gauge(
            "canary_release_duration_seconds",
            "Seconds since the release started; its length once it ended",
            _SERVICE,
            registry=r,
        )
        self.decisions = Counter(
            "canary_release_decisions",
            "Analysis verdicts (continue, hold, pause, rollback, pass, fail)",
            (*_SERVICE, "decision"),
            registry=r,
        )
        self._releases: dict[tuple[str, str], _Release] = {}
        self._lock = threading.Lock()

    def notify(self, event: ReleaseEvent) -> None:
        with self._lock:
            self._record(event)
        if self.pushgateway:
            self.push(event.identity.namespace, event.identity.service)

    def _record(self, event: ReleaseEvent) -> None:
        who = event.identity
        key = (who.namespace, who.service)
        release = self._releases.get(key)
        if release is None or release.release_id != who.release_id:
            if release is not None and release.phase is not None:
                self.phase.remove(*key, release.phase)  # the previous release's last phase
            release = self._releases[key] = _Release(who.release_id, event.time)
            self.status.labels(*key).set(RUNNING)
        if event.canary_weight is not None:
            self.weight.labels(*key).set(event.canary_weight)
        if event.kind is EventKind.PHASE_STARTED and event.phase:
            self._enter(key, release, event.phase)
        if event.decision is not None:
            self.decisions.labels(*key, event.decision).inc()
        if event.kind is EventKind.PROMOTED:
            self.status.labels(*key).set(PROMOTED)
        elif event.kind in (EventKind.ROLLBACK, EventKind.FAILED):
            self.status.labels(*key).set(ROLLED_BACK)
        self.duration.labels(*key).set((event.time - release.started).total_seconds())

    def _enter(self, key: tuple[str, str], release: _Release, phase: str) -> None:
        if release.phase is not None and release.phase != phase:
            self.phase.remove(*key, release.phase)
        release.phase = phase
        self.phase.labels(*key, phase).set(1)

    def push(self, namespace: str, service: str) -> None:
        """Replace this service's group on the Pushgateway with its metrics now."""
        from prometheus_client import push_to_gateway

        push_to_gateway(
            self.pushgateway or "",
            job=PUSH_JOB,
            timeout=5,
            registry=_OneService(self.registry, namespace, service),
            grouping_key={"namespace": namespace, "service": service},
        )


class _OneService:
    """The registry's samples of one service: what its Pushgateway group holds."""

    def __init__(self, registry: CollectorRegistry, namespace: str, service: str):
        self.registry, self.labels = registry, {"namespace": namespace, "service": service}

    def collect(self) -> Iterator[Metric]:
        for family in self.registry.collect():
            samples = [
                s
                for s in family.samples
                if all(s.labels.get(k) == v for k, v in self.labels.items())
            ]
            if samples:
                one = Metric(family.name, family.documentation, family.type, family.unit)
                one.samples = samples
                yield one


_from_env: MetricsNotifier | None = None
_served: set[str] = set()
_from_env_lock = threading.Lock()


def metrics_notifier_from_env() -> MetricsNotifier | None:
    """The process's metrics notifier when the environment asks for one, else None.

    Its HTTP server starts with the first release that asks for that port and serves for
    the life of the process.
    """
    global _from_env
    port = os.environ.get("CANARY_METRICS_PORT")
    pushgateway = os.environ.get("CANARY_PUSHGATEWAY_URL")
    if not port and not pushgateway:
        return None
    with _from_env_lock:
        if _from_env is None:
            _from_env = MetricsNotifier()
        if port and port not in _served:
            _served.add(port)
            _serve(_from_env.registry, port)
        _from_env.pushgateway = pushgateway or None
        return _from_env


def _serve(registry: CollectorRegistry, port: str) -> None:
    from prometheus_client import start_http_server

    address = os.environ.get("CANARY_METRICS_ADDR", "127.0.0.1")
    try:
        start_http_server(int(port), addr=address, registry=registry)
    except (OSError, ValueError) as exc:  # metrics are for dashboards: never fail a release
        log.warning("cannot serve release metrics on %s:%s: %s", address, port, exc)
