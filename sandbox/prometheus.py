"""A throwaway Prometheus for tests, the demo and the benchmarks.

    with PrometheusServer([sandbox.metrics_url]) as prom:
        prom.url  # http://127.0.0.1:P, after a first successful scrape of every target
        prom.wait_for_value('sum(up{job="sandbox"})', lambda v: v >= 1, timeout=30)

Free port on 127.0.0.1, storage in a temporary directory removed on stop. Targets are
``host:port`` (scraped on ``/metrics``) or URLs such as ``http://127.0.0.1:9100/stats/prometheus``.
For chaos, ``pause``/``resume`` make it hang and ``terminate``/``restart`` take it down.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

DEFAULT_BINARY = "/usr/bin/prometheus"  # Debian's package
PORT_ATTEMPTS = 3
LOG_TAIL_CHARS = 2000


class PrometheusError(OSError):
    """Prometheus failed to start or to answer.

    An OSError, as a failed launch of its binary is: callers such as the demo report either
    the same way.
    """


def find_prometheus_binary() -> str | None:
    """PROMETHEUS_BIN, else ``prometheus`` on PATH, else Debian's path; None without one."""
    candidates = [os.environ.get("PROMETHEUS_BIN"), shutil.which("prometheus"), DEFAULT_BINARY]
    return next((c for c in candidates if c and os.access(c, os.X_OK)), None)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrometheusServer:
    """A Prometheus process scraping ``targets`` every ``scrape_interval`` under one job.

    Its first scrape comes some 5 s after it is ready (service discovery hands targets over
    in 5 s batches): ``wait_for_first_scrape=False`` returns once it is ready, for callers
    that can start before its first samples.
    """

    def __init__(
        self,
        targets: Sequence[str],
        scrape_interval: str = "1s",
        *,
        job: str = "sandbox",
        binary: str | None = None,
        startup_timeout: float = 60.0,
        wait_for_first_scrape: bool = True,
    ) -> None:
        self.targets = list(targets)
        self.scrape_interval = scrape_interval
        self.job = job
        self.binary = binary or find_prometheus_binary() or DEFAULT_BINARY
        self.startup_timeout = startup_timeout
        self.wait_for_first_scrape = wait_for_first_scrape
        self.port = 0
        self.directory: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._launch_log_offset = 0

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
        """Launch it; returns once it is ready and, unless told not to, has scraped every target."""
        self.directory = Path(tempfile.mkdtemp(prefix="canary-prometheus-"))
        try:
            self._config_path.write_text(yaml.safe_dump(self._config()))
            self._launch_on_a_free_port()
            if self.wait_for_first_scrape and self.targets:
                self._wait_for_first_scrapes()
        except BaseException:
            self.stop()  # `with` never calls __exit__ when __enter__ raises
            raise

    def stop(self) -> None:
        """Stop the process and remove its storage."""
        self.terminate()
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None

    def log(self) -> str:
        """Everything Prometheus printed, over every launch."""
        if self.directory is None or not self._log_path.exists():
            return ""
        return self._log_path.read_text(errors="replace")

    # chaos

    def pause(self, timeout: float = 5.0) -> None:
        """Freeze the process (SIGSTOP): connections still open, but queries hang.

        Returns once every thread is stopped: the signal is delivered asynchronously, and a
        query sent just after it could still be answered.
        """
        process = self._running_process()
        process.send_signal(signal.SIGSTOP)
        deadline = time.monotonic() + timeout
        while not _all_threads_stopped(process.pid):
            if time.monotonic() > deadline:
                raise PrometheusError(
                    f"Prometheus (pid {process.pid}) did not stop in {timeout:g}s"
                )
            time.sleep(0.005)

    def resume(self) -> None:
        """Let a paused process go on (SIGCONT)."""
        self._running_process().send_signal(signal.SIGCONT)

    def terminate(self) -> None:
        """Stop the process but keep its port and storage, for `restart`: queries are refused."""
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            self._process.send_signal(signal.SIGCONT)  # a paused process handles no SIGTERM
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=10)
        self._process = None

    def restart(self) -> None:
        """Bring it back on the same port with the samples it had; returns once ready."""
        self.terminate()
        self._launch()
        self._wait_ready()

    # queries

    def api(self, path: str, **params: Any) -> Any:
        """The ``data`` of an HTTP API answer, e.g. ``api("query", query="up")``."""
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=10) as response:
            body = json.load(response)
        if body.get("status") != "success":
            raise PrometheusError(f"{path} {params}: {body}")
        return body["data"]

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        """An instant query's result vector (a scalar becomes one unlabelled sample)."""
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

    def wait_for_value(
        self,
        expr: str,
        accept: Callable[[float], bool],
        timeout: float,
        interval: float = 0.5,
        what: str = "",
    ) -> float:
        """Poll an instant query until its value passes ``accept``; return that value."""
        deadline = time.monotonic() + timeout
        while True:
            last = self.query_value(expr)
            if last is not None and accept(last):
                return last
            if time.monotonic() > deadline:
                raise PrometheusError(
                    f"timed out after {timeout:g}s waiting for {what or expr} (last value {last})"
                )
            time.sleep(interval)

    # internals

    @property
    def _config_path(self) -> Path:
        assert self.directory is not None, "not started"
        return self.directory / "prometheus.yml"

    @property
    def _log_path(self) -> Path:
        assert self.directory is not None, "not started"
        return self.directory / "prometheus.log"

    def _config(self) -> dict[str, Any]:
        return {
            "global": {
                "scrape_interval": self.scrape_interval,
                "evaluation_interval": self.scrape_interval,
            },
            "scrape_configs": [
                {
                    "job_name": self.job,
                    "scrape_interval": self.scrape_interval,
                    "scrape_timeout": self.scrape_interval,
                    "static_configs": [_static_config(t) for t in self.targets],
                }
            ],
        }

    def _launch_on_a_free_port(self) -> None:
        # Another process may take the free port before Prometheus binds it: try another.
        for attempt in range(1, PORT_ATTEMPTS + 1):
            self.port = free_port()
            self._launch()
            try:
                self._wait_ready()
                return
            except PrometheusError:
                if attempt == PORT_ATTEMPTS or not self._lost_the_port():
                    raise
                self.terminate()

    def _lost_the_port(self) -> bool:
        return "address already in use" in self.log()[self._launch_log_offset :]

    def _launch(self) -> None:
        assert self.directory is not None, "not started"
        self._launch_log_offset = len(self.log())
        with self._log_path.open("ab") as log:  # the child keeps its own descriptor
            self._process = subprocess.Popen(
                [
                    self.binary,
                    f"--config.file={self._config_path}",
                    f"--storage.tsdb.path={self.directory / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--storage.tsdb.retention.time=1h",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._process is None or self._process.poll() is not None:
                raise PrometheusError(f"Prometheus exited early:\n{self._log_tail()}")
            if self._answers_ready():
                return
            time.sleep(0.1)
        raise PrometheusError(
            f"Prometheus not ready after {self.startup_timeout:g}s:\n{self._log_tail()}"
        )

    def _answers_ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def _wait_for_first_scrapes(self) -> None:
        self.wait_for_value(
            f'count(up{{job="{self.job}"}} == 1)',
            lambda v: v >= len(self.targets),
            timeout=self.startup_timeout,
            what="a first successful scrape of every target",
        )

    def _running_process(self) -> subprocess.Popen[bytes]:
        if self._process is None or self._process.poll() is not None:
            raise PrometheusError("Prometheus is not running")
        return self._process

    def _log_tail(self) -> str:
        return self.log()[-LOG_TAIL_CHARS:]


def _static_config(target: str) -> dict[str, Any]:
    """A ``host:port`` as is; a URL as its host with its scheme and path as target labels."""
    if "://" not in target:
        return {"targets": [target]}
    url = urllib.parse.urlsplit(target)
    labels = {"__scheme__": url.scheme, "__metrics_path__": url.path or "/metrics"}
    return {"targets": [url.netloc], "labels": labels}


def _all_threads_stopped(pid: int) -> bool:
    """Every thread of `pid` is in state T (stopped), from /proc."""
    states = []
    for stat in Path(f"/proc/{pid}/task").glob("*/stat"):
        try:
            # The state follows the command name, which is in parentheses and may hold spaces.
            states.append(stat.read_text().rsplit(")", 1)[1].split()[0])
        except (OSError, IndexError):
            continue  # the thread just ended
    return bool(states) and all(state == "T" for state in states)
