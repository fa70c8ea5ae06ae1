"""The sandbox's mesh alone, against any Kubernetes API server.

``canary sandbox --cluster KUBECONFIG`` (or, from Python, ``run(kubeconfig)``) runs only the
traffic part of the sandbox: the traffic simulator, the ingress and Istio's metrics
endpoint, on 127.0.0.1. What it routes by comes from the API server the kubeconfig names,
through list and watch with the official client (``sandbox.mesh.watch_cache``):
Deployments (ready as the server's status says), Services, VirtualServices,
DestinationRules and, where the server serves them, HTTPRoutes. The routing, the
simulator and the metrics are the very code of the emulated cluster, over another view.

Nothing is written to the cluster. The scenario gives each version its error rate and
latency; readiness is the server's, so a scenario's start-up delays do not apply.

    mesh = run("admin.kubeconfig", namespace="default", seed=1)
    mesh.ingress_url, mesh.metrics_url
    mesh.stop()
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TypeVar

from kubernetes import client as k8s
from kubernetes import config as k8s_config

from sandbox.chaos import Chaos
from sandbox.mesh.assembly import Mesh
from sandbox.mesh.scenarios import Scenario, load_scenario
from sandbox.mesh.simulator import TrafficSimulator
from sandbox.mesh.watch_cache import ClusterUnavailable, WatchCache

__all__ = ["ClusterUnavailable", "KubeconfigError", "MeshOnCluster", "run"]

T = TypeVar("T")
SYNC_TIMEOUT_S = 30.0
# Chaos that needs the emulated API server and its controller; only metrics-down applies here.
EMULATED_ONLY_FAULTS = ("api_500", "api_409", "api_slow", "api_drop", "api_stall", "flap")


class KubeconfigError(ValueError):
    """The kubeconfig cannot be used (missing, unreadable, no such context)."""


class MeshOnCluster:
    def __init__(
        self,
        kubeconfig: str | Path,
        *,
        context: str | None = None,
        namespace: str | None = None,
        scenario: str | Scenario = "healthy",
        rps: float = 50.0,
        jason_share: float = 0.1,
        seed: int | None = None,
        ingress_port: int = 0,
        metrics_port: int = 0,
        chaos: str | Chaos | None = None,
        services: Sequence[str] = ("reviews",),
        sync_timeout_s: float = SYNC_TIMEOUT_S,
    ) -> None:
        """``namespace`` is the one watched and the callers' (default: the context's, else
        ``default``); ``services`` are the ones the simulated traffic calls."""
        self.kubeconfig, self.context = str(kubeconfig), context
        self.namespace = namespace or _context_namespace(self.kubeconfig, context)
        self.scenario = load_scenario(scenario) if isinstance(scenario, str) else scenario
        self.chaos = Chaos(chaos) if isinstance(chaos, str) else chaos
        _check_chaos(self.chaos)
        self.services = tuple(services)
        self.rps, self.jason_share, self.seed = rps, jason_share, seed
        self.ports = (ingress_port, metrics_port)
        self.sync_timeout_s = sync_timeout_s
        self.api_client: k8s.ApiClient | None = None
        self.cache: WatchCache | None = None
        self.mesh: Mesh | None = None

    # ------------------------------------------------------------------- lifecycle
    def start(self) -> MeshOnCluster:
        """Returns once every watched kind was listed and the mesh serves.

        KubeconfigError for a kubeconfig that cannot be used; ClusterUnavailable when the
        server cannot be listed; OSError when a port is taken. Nothing is left running.
        """
        if self.mesh is not None:
            return self  # already running, e.g. ``with run(...)``
        try:
            self.api_client = _api_client(self.kubeconfig, self.context)
            self.cache = WatchCache(self.api_client, self.namespace).start(self.sync_timeout_s)
            if self.chaos is not None:
                self.chaos.restart_clock()
            ingress_port, metrics_port = self.ports
            self.mesh = Mesh(
                self.cache,
                self.scenario,
                namespace=self.namespace,
                services=self.services,
                rps=self.rps,
                jason_share=self.jason_share,
                seed=self.seed,
                ingress_port=ingress_port,
                metrics_port=metrics_port,
                chaos=self.chaos,
            ).start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.mesh is not None:
            self.mesh.stop()
        if self.cache is not None:
            self.cache.stop()
        if self.api_client is not None:
            self.api_client.close()
        self.mesh = self.cache = self.api_client = None

    def __enter__(self) -> MeshOnCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -------------------------------------------------------------------- addresses
    @property
    def server(self) -> str:
        """The API server's URL, as the kubeconfig names it."""
        return self._running(self.api_client).configuration.host

    @property
    def ingress_url(self) -> str:
        return self._running(self.mesh).ingress_url

    @property
    def metrics_url(self) -> str:
        return self._running(self.mesh).metrics_url

    @property
    def simulator(self) -> TrafficSimulator:
        return self._running(self.mesh).simulator

    @property
    def watching(self) -> list[str]:
        """The kinds watched (``deployments``, ``services``, ...)."""
        return list(self._running(self.cache).watching)

    @property
    def skipped(self) -> list[str]:
        """The kinds the server does not serve, so not watched (e.g. ``httproutes``)."""
        return list(self._running(self.cache).skipped)

    @staticmethod
    def _running(part: T | None) -> T:
        if part is None:
            raise RuntimeError("the mesh is not running")
        return part


def run(kubeconfig: str | Path, **options: object) -> MeshOnCluster:
    """Start the mesh against the API server of ``kubeconfig``; ``stop()`` it when done.

    Takes the options of ``MeshOnCluster``.
    """
    return MeshOnCluster(kubeconfig, **options).start()  # type: ignore[arg-type]


def _api_client(kubeconfig: str, context: str | None) -> k8s.ApiClient:
    configuration = k8s.Configuration()
    configuration.retries = 0  # the watch cache retries, with backoff, by listing again
    try:
        return k8s_config.new_client_from_config(
            config_file=kubeconfig,
            context=context,
            client_configuration=configuration,
            persist_config=False,
        )
    except Exception as exc:  # the loader raises many kinds, all meaning "unusable"
        raise KubeconfigError(f"{kubeconfig}: {_first_line(exc)}") from None


def _context_namespace(kubeconfig: str, context: str | None) -> str:
    try:
        contexts, current = k8s_config.list_kube_config_contexts(kubeconfig)
    except Exception as exc:
        raise KubeconfigError(f"{kubeconfig}: {_first_line(exc)}") from None
    chosen = next((c for c in contexts if c.get("name") == context), None) if context else current
    if chosen is None:
        raise KubeconfigError(f"{kubeconfig}: no context named {context!r}")
    return (chosen.get("context") or {}).get("namespace") or "default"


def _check_chaos(chaos: Chaos | None) -> None:
    if chaos is None:
        return
    emulated = [
        name.replace("_", "-") for name in EMULATED_ONLY_FAULTS if getattr(chaos.spec, name)
    ]
    if emulated:
        raise ValueError(
            f"chaos: {', '.join(emulated)} needs the emulated API server; "
            "against a cluster only metrics-down applies"
        )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
