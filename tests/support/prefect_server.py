"""A Prefect server in its own process, as production runs it: `prefect server start`.

Its own PREFECT_HOME (SQLite in a scratch directory), a free loopback port, the UI served
unless told not to (the browser tests open it; copying it into place takes a while), no
analytics, no schedules. `start()` returns once `/api/health` answers.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from sandbox.prometheus import free_port
from tests.support.processes import start_process, stop_process
from tests.support.waiting import wait_until

HOST = "127.0.0.1"


class PrefectServer:
    def __init__(self, startup_timeout: float = 180.0, ui: bool = True) -> None:
        self.startup_timeout = startup_timeout
        self.ui = ui
        self.port = 0
        self.home: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The UI's address (the API is under /api)."""
        return f"http://{HOST}:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.url}/api"

    @property
    def log_path(self) -> Path:
        assert self.home is not None, "the server was not started"
        return self.home / "server.log"

    def client_env(self) -> dict[str, str]:
        """What a process needs to talk to this server (and never to another)."""
        return {
            "PREFECT_API_URL": self.api_url,
            "PREFECT_UI_URL": self.url,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        }

    def __enter__(self) -> PrefectServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> PrefectServer:
        self.home = Path(tempfile.mkdtemp(prefix="canary-prefect-server-"))
        self.port = free_port()
        env = os.environ | {
            "PREFECT_HOME": str(self.home),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_SERVER_UI_SHOW_PROMOTIONAL_CONTENT": "false",
            "PREFECT_UI_API_URL": self.api_url,
            "PREFECT_UI_ENABLED": str(self.ui).lower(),
            "PREFECT_SERVER_LOGGING_LEVEL": "WARNING",
            # SQLite on a busy machine: wait for a lock rather than answer 503 at once.
            "PREFECT_SERVER_DATABASE_TIMEOUT": "30",
            # No scheduled runs: the release train's cron would start trains of its own
            # (on the repository's configs) beside the ones a test starts.
            "PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED": "false",
        }
        env.pop("PREFECT_API_URL", None)
        command = [sys.executable, "-m", "prefect", "server", "start"]
        command += ["--host", HOST, "--port", str(self.port)]
        with self.log_path.open("wb") as log:
            self._process = start_process(
                command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=self.home
            )
        try:
            wait_until(
                self._healthy,
                self.startup_timeout,
                interval=0.2,
                message=f"the Prefect server on {self.url} to answer /api/health",
            )
        except AssertionError as exc:
            self.stop()
            raise AssertionError(f"{exc}\n{self.log()}") from None
        return self

    def _healthy(self) -> bool:
        if self._process is not None and self._process.poll() is not None:
            raise AssertionError(f"the Prefect server exited ({self._process.returncode})")
        try:
            with urllib.request.urlopen(f"{self.api_url}/health", timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def log(self) -> str:
        if self.home is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self._process is not None:
            stop_process(self._process)
            self._process = None
        if self.home is not None:
            shutil.rmtree(self.home, ignore_errors=True)
            self.home = None
