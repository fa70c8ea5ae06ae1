"""A throwaway Prometheus for the demo: scrapes the sandbox's Istio metrics every second.

    with PrometheusProcess("http://127.0.0.1:9100/metrics") as prom:
        prom.url  # http://127.0.0.1:P

Free port on 127.0.0.1, storage in a temporary directory removed on stop.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import yaml


class PrometheusProcess:
    def __init__(self, binary: str, target_url: str, scrape_interval: str = "1s") -> None:
        self.binary, self.target_url, self.scrape_interval = binary, target_url, scrape_interval
        self.port = 0
        self._dir: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> PrometheusProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, timeout: float = 30.0) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="canary-demo-prometheus-"))
        config = self._dir / "prometheus.yml"
        config.write_text(yaml.safe_dump(self._config()))
        self.port = _free_port()
        log = open(self._dir / "prometheus.log", "wb")  # noqa: SIM115 - the process owns it
        self._process = subprocess.Popen(
            [
                self.binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={self._dir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        self._wait_ready(timeout)

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=10)
        self._process = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def _config(self) -> dict[str, object]:
        target = urllib.parse.urlsplit(self.target_url)
        return {
            "scrape_configs": [
                {
                    "job_name": "sandbox",
                    "scrape_interval": self.scrape_interval,
                    "scrape_timeout": self.scrape_interval,
                    "metrics_path": target.path or "/metrics",
                    "static_configs": [{"targets": [target.netloc]}],
                }
            ]
        }

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process is None or self._process.poll() is not None:
                raise OSError("prometheus exited at start")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.1)
        self.stop()
        raise OSError(f"prometheus not ready after {timeout:g}s")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
