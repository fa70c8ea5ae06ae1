"""A notifier that writes each event as one line to the run log (and stdout if asked)."""

from __future__ import annotations

import logging
import sys
from typing import TextIO

from canary.events import ReleaseEvent

_fallback_log = logging.getLogger("canary.release")


class ConsoleNotifier:
    def __init__(self, *, stdout: bool = False, stream: TextIO | None = None):
        self.stdout = stdout
        self.stream = stream

    def notify(self, event: ReleaseEvent) -> None:
        line = event.summary()
        run_logger().info(line)
        if self.stdout:
            stamp = event.time.astimezone().strftime("%H:%M:%S")
            print(f"{stamp}  {line}", file=self.stream or sys.stdout, flush=True)


def run_logger(
    fallback: logging.Logger = _fallback_log,
) -> logging.Logger | logging.LoggerAdapter:
    """The Prefect run logger inside a flow or task run, else `fallback`."""
    from prefect.exceptions import MissingContextError
    from prefect.logging import get_run_logger

    try:
        return get_run_logger()
    except MissingContextError:
        return fallback
