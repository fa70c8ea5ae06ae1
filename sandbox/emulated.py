"""The emulated cluster in one object: API server, readiness controller, mesh and metrics.

``Sandbox`` composes, all on 127.0.0.1:

* the emulated Kubernetes API server (``api_url``), preloaded with BookInfo, serving
  Istio's VirtualServices and DestinationRules and the Gateway API's HTTPRoutes;
* the readiness controller that gives Deployments their Pods and status;
* the mesh (``sandbox.mesh.assembly.Mesh``) over the API server's object store: the
  traffic simulator (productpage -> reviews at ``rps``), the mesh ingress (``ingress_url``)
  and Istio's metrics endpoint (``metrics_url`` = ``http://127.0.0.1:P/metrics``, with
  ``/debug/split``, ``/debug/routing`` and ``/debug/readiness``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sandbox import bookinfo
from sandbox.chaos import Chaos
from sandbox.kube.apiserver import ApiServer
from sandbox.kube.controller import ReadinessController
from sandbox.kube.gateway_schema import GatewayApiValidator
from sandbox.kube.istio_schema import IstioValidator
from sandbox.kube.kubeconfig import write_kubeconfig
from sandbox.kube.store import ObjectStore
from sandbox.mesh.assembly import Mesh
from sandbox.mesh.ingress import IngressServer
from sandbox.mesh.scenarios import Scenario, load_scenario
from sandbox.mesh.simulator import TrafficSimulator

HOST = "127.0.0.1"


class Sandbox:
    def __init__(
        self,
        scenario: str | Scenario = "healthy",
        *,
        namespace: str = "default",
        api_port: int = 0,
        ingress_port: int = 0,
        metrics_port: int = 0,
        seed: int | None = None,
        rps: float = 50.0,
        jason_share: float = 0.1,
        startup_delay_s: float | None = None,
        istio_crds: str | None = None,
        gateway_api_crd: str | None = None,
        preload: bool = True,
        chaos: str | Chaos | None = None,
        extra_services: Sequence[str] = (),
    ) -> None:
        """``startup_delay_s``, when given, replaces every version's start-up delay.
        ``istio_crds`` validates Istio objects against a published CRD file instead of
        the built-in schema, ``gateway_api_crd`` HTTPRoutes against a published HTTPRoute
        CRD (its CEL rules aside). ``preload=False`` starts with an empty namespace.
        ``chaos`` injects faults (a spec string or a Chaos, see sandbox.chaos).
        ``extra_services`` are more services like BookInfo's (Service, v1 Deployment),
        which the simulated traffic also calls."""
        self.scenario = load_scenario(scenario) if isinstance(scenario, str) else scenario
        self.namespace = namespace
        self.seed = seed
        self._ports = (api_port, ingress_port, metrics_port)
        self._rates = (rps, jason_share)
        self._startup_delay_s = startup_delay_s
        self._istio = IstioValidator(istio_crds)  # fails fast on a bad CRD file
        self._gateway_api = GatewayApiValidator(gateway_api_crd)
        self._preload = preload
        self.chaos = Chaos(chaos) if isinstance(chaos, str) else chaos
        self.extra_services = tuple(extra_services)
        self.store = ObjectStore()
        self.api: ApiServer | None = None
        self.controller: ReadinessController | None = None
        self.mesh: Mesh | None = None
        self.simulator: TrafficSimulator | None = None
        self.ingress: IngressServer | None = None
        self.startup_s: float | None = None

    # ------------------------------------------------------------ lifecycle
    def start(self) -> Sandbox:
        began = time.monotonic()
        api_port, ingress_port, metrics_port = self._ports
        rps, jason_share = self._rates
        try:
            if self.chaos is not None:
                self.chaos.restart_clock()
            self.api = ApiServer(
                self.store,
                host=HOST,
                port=api_port,
                istio=self._istio,
                gateway_api=self._gateway_api,
                chaos=self.chaos,
            ).start()
            self.api.ensure_namespace(self.namespace)
            if self._preload:
                for plural, obj in bookinfo.objects(self.namespace, self.extra_services):
                    self.api.create_object(plural, obj)
            self.controller = ReadinessController(
                self.store, self.scenario, delay_override_s=self._startup_delay_s, chaos=self.chaos
            ).start()
            self.mesh = Mesh(
                self.store,
                self.scenario,
                namespace=self.namespace,
                services=["reviews", *self.extra_services],
                rps=rps,
                jason_share=jason_share,
                seed=self.seed,
                ingress_port=ingress_port,
                metrics_port=metrics_port,
                chaos=self.chaos,
            ).start()
            self.simulator, self.ingress = self.mesh.simulator, self.mesh.ingress
        except BaseException:
            self.stop()
            raise
        self.startup_s = time.monotonic() - began
        return self

    def stop(self) -> None:
        for part in (self.mesh, self.controller, self.api):
            if part is not None:
                part.stop()
        self.mesh = self.controller = self.api = None
        self.simulator = self.ingress = None

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------ addresses
    @property
    def api_url(self) -> str:
        return self._running(self.api).url

    @property
    def ingress_url(self) -> str:
        return self._running(self.ingress).url

    @property
    def metrics_url(self) -> str:
        return self._running(self.mesh).metrics_url

    @staticmethod
    def _running(part: Any) -> Any:
        if part is None:
            raise RuntimeError("the sandbox is not running")
        return part

    def write_kubeconfig(self, path: str | Path) -> Path:
        return write_kubeconfig(path, self.api_url, self.namespace)

    # -------------------------------------------------------------- waiting
    def wait_ready(self, timeout: float = 10.0) -> bool:
        """Wait until every Deployment in the namespace has all its replicas ready."""
        deadline = time.monotonic() + timeout
        revision = -1
        while True:
            deployments = self.store.list("deployments", self.namespace)
            if all(_rolled_out(d) for d in deployments):
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            revision = self.store.wait(max(revision, self.store.revision()), min(left, 0.5))


def _rolled_out(deployment: dict[str, Any]) -> bool:
    spec, status = deployment.get("spec", {}), deployment.get("status", {})
    want = spec.get("replicas", 1)
    return (
        status.get("observedGeneration", 0) >= deployment["metadata"].get("generation", 1)
        and status.get("updatedReplicas", 0) == want
        and status.get("availableReplicas", 0) == want
        and status.get("replicas", 0) == want
    )
