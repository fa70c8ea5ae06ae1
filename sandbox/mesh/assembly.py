"""The mesh's running parts over one view of the cluster.

``Mesh(view, scenario)`` runs, on 127.0.0.1, the traffic simulator (productpage calling
each service at ``rps``), the ingress (``ingress_url``) and Istio's metrics endpoint
(``metrics_url``, with the ``/debug/...`` views). They share one router and one set of Istio
metrics, so what the ingress serves and what the simulated users get are counted together.

The emulated cluster (``sandbox.emulated.Sandbox``) and the mesh against any API server
(``sandbox.mesh_on_cluster``) both run this, over their own view.
"""

from __future__ import annotations

from collections.abc import Sequence

from sandbox.mesh.cluster_view import ClusterView
from sandbox.mesh.ingress import IngressServer
from sandbox.mesh.istio_metrics import IstioMetrics
from sandbox.mesh.metrics_server import MetricsFaults, MetricsServer
from sandbox.mesh.routing import MeshRouter
from sandbox.mesh.scenarios import Scenario
from sandbox.mesh.simulator import TrafficSimulator

HOST = "127.0.0.1"


class Mesh:
    def __init__(
        self,
        view: ClusterView,
        scenario: Scenario,
        *,
        namespace: str = "default",
        services: Sequence[str] = ("reviews",),
        rps: float = 50.0,
        jason_share: float = 0.1,
        seed: int | None = None,
        ingress_port: int = 0,
        metrics_port: int = 0,
        chaos: MetricsFaults | None = None,
    ) -> None:
        """``services`` are the ones the simulated traffic calls, ``rps`` each."""
        self.router = MeshRouter(view, namespace)
        self.metrics = IstioMetrics()
        self.simulator = TrafficSimulator(
            view,
            scenario,
            namespace=namespace,
            rps=rps,
            jason_share=jason_share,
            seed=seed,
            metrics=self.metrics,
            router=self.router,
            service=list(services),
        )
        self.ingress = IngressServer(
            view,
            scenario,
            HOST,
            ingress_port,
            namespace,
            metrics=self.metrics,
            router=self.router,
            seed=seed,
        )
        try:
            self.metrics_server = MetricsServer(self.simulator, metrics_port, chaos)
        except BaseException:  # e.g. the metrics port is taken: release the ingress's
            self.ingress.stop()
            raise

    @property
    def ingress_url(self) -> str:
        return self.ingress.url

    @property
    def metrics_url(self) -> str:
        return self.metrics_server.url

    def start(self) -> Mesh:
        try:
            self.simulator.start()
            self.ingress.start()
            self.metrics_server.start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop every part; the ports are released once it returns."""
        self.metrics_server.stop()
        self.ingress.stop()
        self.simulator.stop()

    def __enter__(self) -> Mesh:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
