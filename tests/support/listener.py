"""`canary approvals serve` in its own process, as the listener Deployment runs it."""

from __future__ import annotations

import contextlib
import queue
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

from tests.conftest import REPO
from tests.support.processes import start_process, stop_process

STARTUP_TIMEOUT_S = 120.0  # it imports Prefect and Slack's SDK, on a busy machine
_URL = re.compile(re.escape("http://127.0.0.1:") + r"\d+/slack/events")


@contextlib.contextmanager
def approval_listener(env: dict[str, str], log_path: Path) -> Iterator[str]:
    """The listener on a free port; yields its interactivity URL (Slack's request URL).

    `env` is its whole environment: the Slack token and signing secret, PREFECT_API_URL.
    """
    env = env | {"PYTHONPATH": str(REPO)}
    env.pop("SLACK_APP_TOKEN", None)  # HTTP, not Socket Mode
    with log_path.open("w") as err:
        process = start_process(
            [sys.executable, "-m", "canary", "approvals", "serve", "--port", "0"],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: lines.put(process.stdout.readline()), daemon=True).start()
    try:
        try:
            line = lines.get(timeout=STARTUP_TIMEOUT_S)
        except queue.Empty:
            line = ""
        match = _URL.search(line)
        assert match, f"listener did not start: {line!r} {log_path.read_text()}"
        yield match[0]
    finally:
        stop_process(process, timeout=10)
