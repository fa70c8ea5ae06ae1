"""The whole sandbox in one object: API server, readiness controller, mesh and metrics.

``Sandbox`` composes, all on 127.0.0.1:

* the emulated Kubernetes API server (``api_url``), preloaded with BookInfo;
* the readiness controller that gives Deployments their Pods and status;
* the traffic simulator (productpage -> reviews at ``rps``) and the mesh ingress
  (``ingress_url``), sharing one Istio router and one set of Istio metrics;
* a metrics endpoint (``metrics_url`` = ``http://127.0.0.1:P/metrics``) that also answers
  ``/debug/split?window=2[&service=reviews]`` (share of recent requests per workload),
  ``/debug/routing`` (the routing table and the split it should produce) and
  ``/debug/readiness`` (when each workload turned ready, on this host's monotonic clock).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from sandbox import bookinfo
from sandbox.apiserver import ApiServer
from sandbox.chaos import Chaos
from sandbox.controller import ReadinessController
from sandbox.ingress import IngressServer
from sandbox.istio_metrics import IstioMetrics
from sandbox.istio_schema import IstioValidator
from sandbox.kubeconfig import write_kubeconfig
from sandbox.mesh_routing import MeshRouter
from sandbox.scenarios import Scenario, load_scenario
from sandbox.simulator import TrafficSimulator
from sandbox.store import ObjectStore

HOST = "127.0.0.1"
PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"


class Sandbox:
    def __init__(self, scenario: str | Scenario = "healthy", *, namespace: str = "default",
                 api_port: int = 0, ingress_port: int = 0, metrics_port: int = 0,
                 seed: int | None = None, rps: float = 50.0, jason_share: float = 0.1,
                 startup_delay_s: float | None = None, istio_crds: str | None = None,
                 preload: bool = True, chaos: str | Chaos | None = None,
                 extra_services: Sequence[str] = ()) -> None:
        """``startup_delay_s``, when given, replaces every version's start-up delay.
        ``istio_crds`` validates Istio objects against a published CRD file instead of
        the built-in schema. ``preload=False`` starts with an empty namespace.
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
        self._preload = preload
        self.chaos = Chaos(chaos) if isinstance(chaos, str) else chaos
        self.extra_services = tuple(extra_services)
        self.store = ObjectStore()
        self.api: ApiServer | None = None
        self.controller: ReadinessController | None = None
        self.simulator: TrafficSimulator | None = None
        self.ingress: IngressServer | None = None
        self._metrics: _MetricsServer | None = None
        self.startup_s: float | None = None

    # ------------------------------------------------------------ lifecycle
    def start(self) -> Sandbox:
        began = time.monotonic()
        api_port, ingress_port, metrics_port = self._ports
        rps, jason_share = self._rates
        try:
            if self.chaos is not None:
                self.chaos.restart_clock()
            self.api = ApiServer(self.store, host=HOST, port=api_port, istio=self._istio,
                                 chaos=self.chaos).start()
            self.api.ensure_namespace(self.namespace)
            if self._preload:
                for plural, obj in bookinfo.objects(self.namespace, self.extra_services):
                    self.api.create_object(plural, obj)
            self.controller = ReadinessController(
                self.store, self.scenario, delay_override_s=self._startup_delay_s,
                chaos=self.chaos).start()
            router, metrics = MeshRouter(self.store, self.namespace), IstioMetrics()
            self.simulator = TrafficSimulator(
                self.store, self.scenario, namespace=self.namespace, rps=rps,
                jason_share=jason_share, seed=self.seed, metrics=metrics, router=router,
                service=["reviews", *self.extra_services])
            self.simulator.start()
            self.ingress = IngressServer(self.store, self.scenario, HOST, ingress_port,
                                         self.namespace, metrics=metrics, router=router,
                                         seed=self.seed)
            self.ingress.start()
            self._metrics = _MetricsServer(self.simulator, metrics_port, self.chaos).start()
        except BaseException:
            self.stop()
            raise
        self.startup_s = time.monotonic() - began
        return self

    def stop(self) -> None:
        for part in (self._metrics, self.ingress, self.simulator, self.controller, self.api):
            if part is not None:
                part.stop()
        self._metrics = self.ingress = self.simulator = self.controller = self.api = None

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
        return self._running(self._metrics).url

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
    return (status.get("observedGeneration", 0) >= deployment["metadata"].get("generation", 1)
            and status.get("updatedReplicas", 0) == want
            and status.get("availableReplicas", 0) == want
            and status.get("replicas", 0) == want)


# -------------------------------------------------------------- metrics HTTP
class _MetricsServer:
    """``/metrics`` (Prometheus text) and the ``/debug/...`` views of the mesh."""

    def __init__(self, simulator: TrafficSimulator, port: int = 0,
                 chaos: Chaos | None = None) -> None:
        self.simulator = simulator
        self._httpd = ThreadingHTTPServer((HOST, port), _metrics_handler(simulator, chaos))
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/metrics"

    def start(self) -> _MetricsServer:
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.2,),
                                        name="sandbox-metrics", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)


def _metrics_handler(simulator: TrafficSimulator, chaos: Chaos | None = None
                     ) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        wbufsize = 64 * 1024  # headers and body in one write: no delayed-ACK stalls
        disable_nagle_algorithm = True

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(url.query).items()}
            if url.path in ("/metrics", "/stats/prometheus"):
                if chaos is not None and chaos.metrics_down():
                    self._reply(503, b"metrics unavailable (chaos)\n", "text/plain")
                    return
                self._reply(200, simulator.metrics_text(), PROMETHEUS_TEXT)
            elif url.path == "/debug/split":
                try:
                    window = float(query.get("window", "2"))
                except ValueError:
                    self._reply(400, b"window must be a number of seconds\n", "text/plain")
                    return
                split = simulator.split(window, query.get("service"))
                self._reply(200, json.dumps(split).encode(), "application/json")
            elif url.path == "/debug/routing":
                body = json.dumps(simulator.sample_routing(), default=str).encode()
                self._reply(200, body, "application/json")
            elif url.path == "/debug/readiness":
                body = json.dumps(simulator.router.readiness_history()).encode()
                self._reply(200, body, "application/json")
            elif url.path == "/healthz":
                self._reply(200, b"ok", "text/plain")
            else:
                self._reply(404, b"not found\n", "text/plain")

        def _reply(self, code: int, body: bytes, content_type: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass  # Prometheus scrapes would flood the output

    return Handler
