"""A real HTTP entry into the emulated mesh, answering as the routed workload would.

The Host header names the destination service as a sidecar sees it (``reviews``,
``reviews.default``, ``reviews.default.svc.cluster.local``, a port allowed). When the Host
is the server's own address (an IP or ``localhost``), the first path segment names the
service instead, so ``curl http://127.0.0.1:PORT/reviews/0`` works too.

The request is routed with :mod:`sandbox.mesh.routing`; a forwarded request is answered
with the chosen version's behaviour (status, and a sleep of the sampled latency, capped),
a header ``x-served-by: <workload>`` and a small JSON body. The mesh's own failures answer
503 ``no healthy upstream`` or 404. Every request is recorded in the Istio metrics.
"""

from __future__ import annotations

import hashlib
import json
import random
import threading
import time
from typing import Any

from sandbox.http_server import HttpServer, RequestHandler
from sandbox.mesh.cluster_view import ClusterView
from sandbox.mesh.istio_metrics import IstioMetrics, Source
from sandbox.mesh.routing import MeshRouter, Request, RouteResult
from sandbox.mesh.scenarios import Scenario, load_scenario
from sandbox.mesh.simulator import behaviour_for

GATEWAY = Source("istio-ingressgateway", "istio-system", "istio-ingressgateway", "unknown")
_STARS = {"v2": "black", "v3": "red"}  # bookinfo: v1 shows no ratings


def pod_name(workload: str) -> str:
    """A stable, Kubernetes-looking pod name for a workload."""
    digest = hashlib.sha256(workload.encode()).hexdigest()
    return f"{workload}-{digest[:10]}-{digest[10:15]}"


def _service_from_path(path: str) -> str:
    return path.lstrip("/").split("/", 1)[0].split("?", 1)[0]


def _is_own_address(host: str) -> bool:
    name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    return name in ("localhost", "") or name.replace(".", "").isdigit() or name.startswith("[")


def response_body(result: RouteResult, status: int, path: str) -> dict[str, Any]:
    """What the workload answers: bookinfo's reviews shape for reviews, a stub otherwise."""
    body: dict[str, Any] = {
        "workload": result.workload,
        "version": result.version,
        "podname": pod_name(result.workload or "unknown"),
    }
    if status >= 500:
        return {**body, "error": "internal server error"}
    # The workload's app answers, whichever Service routed to it (a per-version Service of
    # an HTTPRoute's backends is still the reviews app).
    if (result.app or result.destination_service_name) != "reviews":
        return {**body, "service": result.destination_service_name}
    parts = path.split("?", 1)[0].strip("/").split("/")
    product = parts[1] if len(parts) > 1 and parts[1] else "0"
    reviews = [
        {"reviewer": "Reviewer1", "text": "A gripping read from start to finish."},
        {"reviewer": "Reviewer2", "text": "Long, but the ending pays off."},
    ]
    color = _STARS.get(result.version or "")
    if color:
        for review, stars in zip(reviews, (5, 4), strict=True):
            review["rating"] = {"stars": stars, "color": color}
    return {"id": product, **body, "clustername": "null", "reviews": reviews}


class IngressServer:
    def __init__(
        self,
        view: ClusterView,
        scenario: Scenario | str,
        host: str = "127.0.0.1",
        port: int = 0,
        namespace: str = "default",
        *,
        metrics: IstioMetrics | None = None,
        router: MeshRouter | None = None,
        source: Source = GATEWAY,
        simulate_latency: bool = True,
        max_latency_s: float = 1.0,
        seed: int | None = None,
    ) -> None:
        self.scenario = load_scenario(scenario) if isinstance(scenario, str) else scenario
        self.namespace = namespace
        self.router = router or MeshRouter(view, namespace)
        self.metrics = metrics or IstioMetrics()
        self.source = source
        self.simulate_latency = simulate_latency
        self.max_latency_s = max_latency_s
        self._rng = random.Random(seed)
        self._rng_lock = threading.Lock()
        self._http = HttpServer(
            _handler(self), host=host, port=port, name="mesh-ingress", poll_interval=0.05
        )

    @property
    def url(self) -> str:
        return self._http.url

    def start(self) -> None:
        self._http.start()

    def stop(self) -> None:
        self._http.stop()

    def __enter__(self) -> IngressServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def handle(
        self, host: str, path: str, headers: dict[str, str], method: str
    ) -> tuple[int, dict[str, str], bytes]:
        """Route and answer one request: (status, headers, body)."""
        if _is_own_address(host):
            host = _service_from_path(path)
        request = Request(
            host,
            path,
            headers,
            method=method,
            source_labels={"app": self.source.app},
            source_namespace=self.source.namespace,
        )
        with self._rng_lock:
            result = self.router.table().route(request, self._rng)
            if result.status is None:
                status, latency_ms = behaviour_for(self.scenario, self.router, result).sample(
                    self._rng
                )
            else:
                status, latency_ms = result.status, 0.2
        if result.status is None and self.simulate_latency:
            time.sleep(min(latency_ms / 1000.0, self.max_latency_s))
        self.metrics.record(self.source, result, status, latency_ms)
        return status, *self._reply(result, status, path, latency_ms)

    @staticmethod
    def _reply(
        result: RouteResult, status: int, path: str, latency_ms: float
    ) -> tuple[dict[str, str], bytes]:
        if result.status is not None:
            text = "no healthy upstream" if result.response_flags == "UH" else result.reason
            return {"content-type": "text/plain"}, text.encode()
        headers = {
            "content-type": "application/json",
            "x-served-by": result.workload or "unknown",
            "x-envoy-upstream-service-time": str(round(latency_ms)),
        }
        return headers, json.dumps(response_body(result, status, path)).encode()


def _handler(ingress: IngressServer) -> type[RequestHandler]:
    class Handler(RequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            if length:
                self.rfile.read(length)  # drain, the body is never used
            headers = {k: v for k, v in self.headers.items()}
            status, reply_headers, body = ingress.handle(
                self.headers.get("host", ""), self.path, headers, self.command
            )
            content_type = reply_headers.pop("content-type")
            self.send_body(status, body, content_type, reply_headers | {"server": "istio-envoy"})

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _serve

    return Handler
