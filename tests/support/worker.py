"""A `prefect worker` process on the `canary` process pool, as the worker Deployment runs it.

Each flow run it picks up runs in a child process with the worker's environment: what the
release reads from its environment in production (Slack token and signing secret, the
kubeconfig, Prometheus, the configs directory) is given to the worker here.
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

from tests.conftest import REPO
from tests.support.deployments import POOL, PREFECT
from tests.support.processes import start_process, stop_process


class PrefectWorker:
    def __init__(self, env: dict[str, str], log_path: Path | None = None) -> None:
        self.env = env
        self.log_path = log_path or Path(tempfile.mkdtemp(prefix="canary-worker-")) / "worker.log"
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> PrefectWorker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> PrefectWorker:
        env = self.env | {
            "CANARY_HOME": str(REPO),  # the pull step's working directory
            "PREFECT_WORKER_QUERY_SECONDS": "1",
            "PREFECT_WORKER_PREFETCH_SECONDS": "5",
        }
        with self.log_path.open("wb") as log:
            self._process = start_process(
                [*PREFECT, "worker", "start", "--pool", POOL, "--type", "process"],
                cwd=REPO,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return self

    def alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self._process is not None:
            stop_process(self._process)
            self._process = None
