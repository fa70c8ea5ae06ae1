"""A sandbox at fixed addresses, started anew for each test.

A worker, like a cluster's, is configured once: its environment names the kubeconfig, the
mesh and Prometheus. The slot keeps those addresses (ports chosen once, the kubeconfig
written at one path) while each test gets a fresh BookInfo behind them: `fresh()` stops
the sandbox of the previous test and starts a new one on the same ports.

Prometheus, the one client that outlives a test, scrapes the slot's own metrics address
rather than a sandbox's: it keeps its connection to a target open, and a stopped sandbox
still answers on connections it accepted before. Scraping a sandbox directly, Prometheus
would go on reading the first test's counters, frozen, and every later release would see
no canary requests at all. The slot's address answers each scrape from the current
sandbox and closes the connection after it.
"""

from __future__ import annotations

import contextlib
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from sandbox.emulated import Sandbox
from sandbox.prometheus import free_port

HOST = "127.0.0.1"
SCRAPE_TIMEOUT_S = 5.0


class SandboxSlot:
    def __init__(self, directory: Path, seed: int = 11) -> None:
        self.kubeconfig = directory / "kubeconfig"
        self.seed = seed
        names = ("api_port", "ingress_port")
        self.ports = dict(zip(names, _distinct_ports(len(names)), strict=True))
        self.sandbox: Sandbox | None = None
        self._metrics = _MetricsFront(self)

    @property
    def ingress_url(self) -> str:
        return f"http://{HOST}:{self.ports['ingress_port']}"

    @property
    def metrics_url(self) -> str:
        """Where Prometheus scrapes the current sandbox's Istio metrics."""
        return f"{self._metrics.url}/metrics"

    def fresh(self, scenario: str = "healthy", **options: Any) -> Sandbox:
        """A new sandbox (BookInfo preloaded, reviews-v1 ready) at the slot's addresses."""
        self.stop()
        options.setdefault("seed", self.seed)
        self.sandbox = Sandbox(scenario, **self.ports, **options).start()
        assert self.sandbox.wait_ready(10), "the sandbox's BookInfo did not become ready"
        self.sandbox.write_kubeconfig(self.kubeconfig)
        return self.sandbox

    def get(self, resource: str, name: str, namespace: str = "default") -> dict | None:
        assert self.sandbox is not None, "no sandbox started"
        return self.sandbox.store.get(resource, namespace, name)

    def stop(self) -> None:
        """Stop the current sandbox; the slot's addresses stay."""
        if self.sandbox is not None:
            self.sandbox.stop()
            self.sandbox = None

    def close(self) -> None:
        """Stop the sandbox and give up the slot's metrics address."""
        self.stop()
        self._metrics.close()


class _MetricsFront:
    """The slot's metrics address: every request is answered from the current sandbox."""

    def __init__(self, slot: SandboxSlot) -> None:
        self._server = ThreadingHTTPServer((HOST, 0), _front_handler(slot))
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.2,), name="slot-metrics", daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self._server.server_address[1]}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def _front_handler(slot: SandboxSlot) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"  # one answer per connection: nothing to keep open

        def handle(self) -> None:
            # Prometheus may give up on a scrape first (its timeout is shorter than ours).
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                super().handle()

        def do_GET(self) -> None:
            sandbox = slot.sandbox
            if sandbox is None:
                self._reply(503, b"no sandbox in the slot\n", "text/plain")
                return
            base = sandbox.metrics_url.removesuffix("/metrics")
            try:
                with urllib.request.urlopen(base + self.path, timeout=SCRAPE_TIMEOUT_S) as got:
                    self._reply(got.status, got.read(), got.headers.get("Content-Type", ""))
            except urllib.error.HTTPError as exc:
                self._reply(exc.code, exc.read(), exc.headers.get("Content-Type", ""))
            except (urllib.error.URLError, OSError) as exc:  # the sandbox is being replaced
                self._reply(503, f"sandbox unreachable: {exc}\n".encode(), "text/plain")

        def _reply(self, code: int, body: bytes, content_type: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type or "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass  # a scrape a second would flood the output

    return Handler


def _distinct_ports(count: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports
