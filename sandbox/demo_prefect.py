"""The demo's own Prefect server: started at once, on a database migrated only once.

A Prefect server on an empty database spends seconds on migrations. The demo keeps one
migrated database in a per-user cache (`$XDG_CACHE_HOME/canary-release/`, by Prefect
version) and gives every demo a fresh copy of it, so a demo starts quickly and sees only
its own runs. The server starts in the background while the sandbox and Prometheus
start; `wait_ready` waits for its health endpoint.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from sandbox.prometheus import free_port

HOST = "127.0.0.1"
DATABASE = "prefect.db"


def cache_dir() -> Path:
    from importlib.metadata import version

    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "canary-release" / f"demo-prefect-{version('prefect')}"


def migrated_database() -> Path:
    """The cached, migrated database; made on first use (one demo at a time makes it)."""
    cache = cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    database = cache / DATABASE
    with (cache / "lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not database.exists():
            with tempfile.TemporaryDirectory(dir=cache) as scratch:
                _migrate(Path(scratch))
                (Path(scratch) / DATABASE).replace(database)  # whole, or not at all
    return database


def _migrate(home: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "prefect", "server", "database", "upgrade", "-y"],
        env=_env(home),
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode != 0 or not (home / DATABASE).exists():
        last = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise OSError(f"cannot prepare the demo's Prefect database: {last[0]}")


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    return env | {
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",  # the demo prints what happens; no dashboard to build
        "PREFECT_API_DATABASE_MIGRATE_ON_START": "false",  # the copy is migrated already
        "PREFECT_SERVER_LOGGING_LEVEL": "WARNING",
    }


class DemoPrefect:
    """A Prefect server on a fresh copy of the migrated database, for one demo."""

    def __init__(self) -> None:
        self.port = free_port()
        self.home = Path(tempfile.mkdtemp(prefix="canary-demo-prefect-"))
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def api_url(self) -> str:
        return f"http://{HOST}:{self.port}/api"

    def start(self) -> DemoPrefect:
        shutil.copyfile(migrated_database(), self.home / DATABASE)
        command = [sys.executable, "-m", "prefect", "server", "start"]
        command += ["--host", HOST, "--port", str(self.port)]
        with (self.home / "server.log").open("wb") as log:
            self._process = subprocess.Popen(
                command, env=_env(self.home), stdout=log, stderr=subprocess.STDOUT
            )
        return self

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while not self._healthy():
            if self._process is not None and self._process.poll() is not None:
                raise OSError(f"the demo's Prefect server stopped: see {self.home / 'server.log'}")
            if time.monotonic() > deadline:
                raise OSError(f"the demo's Prefect server did not answer in {timeout:g}s")
            time.sleep(0.1)

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.api_url}/health", timeout=2) as answer:
                return answer.status == 200
        except OSError:
            return False

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._process.wait(timeout=15)
            if self._process.poll() is None:
                self._process.kill()
                self._process.wait(timeout=10)
        shutil.rmtree(self.home, ignore_errors=True)


@contextlib.contextmanager
def demo_prefect() -> Iterator[DemoPrefect]:
    server = DemoPrefect().start()
    try:
        yield server
    finally:
        server.stop()
