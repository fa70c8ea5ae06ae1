"""The cluster's processes: started detached with a pid file and a log each, stopped by pid."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from real_cluster.errors import ComponentError

STOP_GRACE = 15.0  # seconds between SIGTERM and SIGKILL
NICENESS = 5


def free_port() -> int:
    """A port on 127.0.0.1 nothing listens on now (the OS picks it)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass(frozen=True)
class Component:
    """One process of the cluster, as `up` left it in DIR."""

    name: str
    directory: Path

    @property
    def pid_file(self) -> Path:
        return self.directory / "pids" / f"{self.name}.pid"

    @property
    def log(self) -> Path:
        return self.directory / "logs" / f"{self.name}.log"

    def pid(self) -> int | None:
        try:
            return int(self.pid_file.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def expected_binary(self) -> str | None:
        try:
            return self.pid_file.read_text().split(maxsplit=1)[1].strip()
        except (OSError, IndexError):
            return None

    def running(self) -> bool:
        """True while the recorded pid is alive and still runs the binary `up` started."""
        pid, binary = self.pid(), self.expected_binary()
        if pid is None or binary is None:
            return False
        try:
            argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0", 1)[0].decode()
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return False
        return argv0 == binary and state != "Z"  # a reused pid is another program


def start(component: Component, argv: Sequence[str]) -> subprocess.Popen[bytes]:
    """Starts ``argv`` in its own session (it outlives `up`), logging to its log file.

    Niced: the cluster is a test fixture and yields the CPU to the tests beside it. `nice`
    execs the binary, so the pid is the binary's own.
    """
    component.log.parent.mkdir(parents=True, exist_ok=True)
    component.pid_file.parent.mkdir(parents=True, exist_ok=True)
    niced = ["nice", "-n", str(NICENESS)] if shutil.which("nice") else []
    with component.log.open("ab") as log:
        process = subprocess.Popen(
            [*niced, *argv],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=component.directory,
        )
    component.pid_file.write_text(f"{process.pid} {argv[0]}\n")
    return process


def last_log_line(log: Path) -> str:
    try:
        lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return lines[-1].strip() if lines else ""


def wait_for(
    component: Component,
    process: subprocess.Popen[bytes] | None,
    ready: Callable[[], bool],
    timeout: float,
    what: str,
) -> None:
    """Polls ``ready`` until it holds; fails at once if the process exits, or on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        if process is not None and process.poll() is not None:
            cause = last_log_line(component.log) or "no output"
            raise ComponentError(
                component.name, f"exited with code {process.returncode}: {cause}", component.log
            )
        if ready():
            return
        if time.monotonic() > deadline:
            raise ComponentError(
                component.name,
                f"not {what} after {timeout:.0f}s; last log "
                f"line: {last_log_line(component.log) or 'none'}",
                component.log,
            )
        time.sleep(0.2)


def stop(component: Component, grace: float = STOP_GRACE) -> bool:
    """SIGTERM, then SIGKILL after ``grace``; removes the pid file. True if it was running."""
    was_running = component.running()
    pid = component.pid()
    if was_running and pid is not None:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while component.running() and time.monotonic() < deadline:
            time.sleep(0.1)
        if component.running():
            os.kill(pid, signal.SIGKILL)
            while component.running():
                time.sleep(0.05)
    component.pid_file.unlink(missing_ok=True)
    return was_running
