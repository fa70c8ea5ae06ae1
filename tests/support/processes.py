"""Processes the tests start: each in a session of its own, stopped with everything it started."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from typing import Any


def start_process(command: list[str], **options: Any) -> subprocess.Popen[Any]:
    """`subprocess.Popen` in a new session, so that `stop_process` reaches its children too.

    A Prefect worker runs each flow in a child process; stopping only the worker would leave
    the flow running.
    """
    return subprocess.Popen(command, start_new_session=True, **options)


def stop_process(process: subprocess.Popen[Any], timeout: float = 20.0) -> None:
    """SIGTERM to the process's group, then SIGKILL to what is left after `timeout`."""
    if process.poll() is None:
        _signal_group(process, signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _signal_group(process, signal.SIGKILL)
            process.wait(timeout=10)
    # Children may outlive their parent's exit by a moment.
    _signal_group(process, signal.SIGKILL)


def _signal_group(process: subprocess.Popen[Any], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)
