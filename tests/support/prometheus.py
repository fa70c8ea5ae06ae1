"""A real Prometheus server for tests: free port, temporary storage, waits until scraping.

    with PrometheusServer(["127.0.0.1:9100"]) as prom:
        prom.wait_for_value('sum(up{job="sandbox"})', lambda v: v >= 1, timeout=30)

Targets are ``host:port`` (scraped on ``/metrics``) or URLs such as
``http://127.0.0.1:9100/stats/prometheus``. Tests call :func:`require_prometheus` first:
it skips when the binary is missing, except under CI (``CI`` set), where it fails.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

DEFAULT_BINARY = "/usr/bin/prometheus"


def prometheus_binary() -> str | None:
    """PROMETHEUS_BIN, else ``prometheus`` on PATH, else Debian's path."""
    candidates = [os.environ.get("PROMETHEUS_BIN"), shutil.which("prometheus"), DEFAULT_BINARY]
    return next((c for c in candidates if c and os.access(c, os.X_OK)), None)


def require_prometheus() -> str:
    """The binary's path; skips the calling test without it (fails it under CI)."""
    binary = prometheus_binary()
    if binary is None:
        reason = ("Prometheus binary not found (install Debian's 'prometheus' package "
                  "or set PROMETHEUS_BIN)")
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return binary


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _static_config(target: str) -> dict[str, Any]:
    if "://" not in target:
        return {"targets": [target]}
    url = urllib.parse.urlsplit(target)
    labels = {"__scheme__": url.scheme, "__metrics_path__": url.path or "/metrics"}
    return {"targets": [url.netloc], "labels": labels}


class PrometheusError(RuntimeError):
    pass


class PrometheusServer:
    """A Prometheus process scraping ``targets`` under one job (``job``)."""

    def __init__(self, targets: list[str], scrape_interval: str = "1s", *,
                 job: str = "sandbox", binary: str | None = None,
                 startup_timeout: float = 60.0) -> None:
        self.targets = list(targets)
        self.scrape_interval = scrape_interval
        self.job = job
        self.binary = binary or prometheus_binary() or DEFAULT_BINARY
        self.startup_timeout = startup_timeout
        self.port = 0
        self.directory: Path | None = None
        self._process: subprocess.Popen | None = None
        self._log = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # lifecycle

    def __enter__(self) -> PrometheusServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="prometheus-test-"))
        config = self.directory / "prometheus.yml"
        config.write_text(yaml.safe_dump(self._config()))
        for _attempt in range(3):  # the free port may be taken before Prometheus binds it
            self.port = free_port()
            self._launch(config)
            try:
                self._wait_ready()
                break
            except PrometheusError:
                if "address already in use" not in self.log():
                    self.stop()
                    raise
                self._terminate()
        self.wait_for_value(f'count(up{{job="{self.job}"}} == 1)',
                            lambda v: v >= len(self.targets), timeout=self.startup_timeout,
                            what="a first successful scrape of every target")

    def _config(self) -> dict[str, Any]:
        return {
            "global": {"scrape_interval": self.scrape_interval,
                       "evaluation_interval": self.scrape_interval},
            "scrape_configs": [{
                "job_name": self.job,
                "scrape_interval": self.scrape_interval,
                "scrape_timeout": self.scrape_interval,
                "static_configs": [_static_config(t) for t in self.targets],
            }],
        }

    def _launch(self, config: Path) -> None:
        assert self.directory is not None
        self._log = open(self.directory / "prometheus.log", "ab")  # noqa: SIM115
        self._process = subprocess.Popen(
            [self.binary, f"--config.file={config}",
             f"--storage.tsdb.path={self.directory / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}",
             "--storage.tsdb.retention.time=1h"],
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._process is None or self._process.poll() is not None:
                raise PrometheusError(f"Prometheus exited early:\n{self.log()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.1)
        raise PrometheusError(f"Prometheus not ready after {self.startup_timeout}s:\n"
                              f"{self.log()[-2000:]}")

    def _terminate(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=10)
        self._process = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def stop(self) -> None:
        self._terminate()
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None

    def log(self) -> str:
        if self.directory is None or not (self.directory / "prometheus.log").exists():
            return ""
        return (self.directory / "prometheus.log").read_text(errors="replace")

    # queries

    def api(self, path: str, **params: Any) -> Any:
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=10) as response:
            body = json.load(response)
        if body.get("status") != "success":
            raise PrometheusError(f"{path} {params}: {body}")
        return body["data"]

    def query(self, expr: str, at: float | None = None) -> list[dict]:
        """An instant query's result vector."""
        params = {"query": expr} if at is None else {"query": expr, "time": at}
        data = self.api("query", **params)
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": data["result"]}]
        return data["result"]

    def query_value(self, expr: str, at: float | None = None) -> float | None:
        """The single value of an instant query, or None when it returns nothing."""
        result = self.query(expr, at)
        if not result:
            return None
        if len(result) > 1:
            raise PrometheusError(f"{expr!r} returned {len(result)} series, expected one")
        return float(result[0]["value"][1])

    def wait_for_value(self, expr: str, accept: Callable[[float], bool], timeout: float,
                       interval: float = 0.5, what: str = "") -> float:
        """Poll an instant query until its value passes ``accept``; return that value."""
        deadline = time.monotonic() + timeout
        last: float | None = None
        while True:
            last = self.query_value(expr)
            if last is not None and accept(last):
                return last
            if time.monotonic() > deadline:
                raise PrometheusError(f"timed out after {timeout}s waiting for "
                                      f"{what or expr} (last value {last})")
            time.sleep(interval)
