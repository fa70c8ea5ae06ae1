"""A sandbox at fixed addresses, started anew for each test.

A worker, like a cluster's, is configured once: its environment names the kubeconfig, the
mesh and Prometheus. The slot keeps those addresses (ports chosen once, the kubeconfig
written at one path) while each test gets a fresh BookInfo behind them: `fresh()` stops
the sandbox of the previous test and starts a new one on the same ports.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sandbox.emulated import Sandbox
from sandbox.prometheus import free_port


class SandboxSlot:
    def __init__(self, directory: Path, seed: int = 11) -> None:
        self.kubeconfig = directory / "kubeconfig"
        self.seed = seed
        names = ("api_port", "ingress_port", "metrics_port")
        self.ports = dict(zip(names, _distinct_ports(len(names)), strict=True))
        self.sandbox: Sandbox | None = None

    @property
    def ingress_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['ingress_port']}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['metrics_port']}/metrics"

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
        if self.sandbox is not None:
            self.sandbox.stop()
            self.sandbox = None


def _distinct_ports(count: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports
