"""Notifiers: where release events go (the run log, the console, chat...).

A notifier is anything with `notify(event)`. The release sends every event through the
process's current notifier (see `notifying`), a fan-out that never lets one notifier's
failure or slowness fail or stall the release.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Protocol, runtime_checkable

from canary.events import ReleaseEvent
from canary.notify.console import ConsoleNotifier

__all__ = [
    "ConsoleNotifier",
    "Notifier",
    "Notifiers",
    "current_notifier",
    "notifying",
    "notifying_here",
]

log = logging.getLogger(__name__)


@runtime_checkable
class Notifier(Protocol):
    def notify(self, event: ReleaseEvent) -> None: ...


class Notifiers:
    """Fan-out to several notifiers, each in its own worker so events keep their order.

    `notify` waits at most `timeout` seconds for all of them; a notifier that raises is
    logged, one that is slower is left to finish in the background.
    """

    def __init__(self, notifiers: Iterable[Notifier], *, timeout: float = 2.0):
        self.notifiers = list(notifiers)
        self.timeout = timeout
        self._workers = [
            ThreadPoolExecutor(1, thread_name_prefix=f"notifier-{type(n).__name__}")
            for n in self.notifiers
        ]

    def notify(self, event: ReleaseEvent) -> None:
        pending = [
            (notifier, worker.submit(contextvars.copy_context().run, notifier.notify, event))
            for notifier, worker in zip(self.notifiers, self._workers, strict=True)
        ]
        deadline = time.monotonic() + self.timeout
        for notifier, future in pending:
            name = type(notifier).__name__
            try:
                future.result(timeout=max(0.0, deadline - time.monotonic()))
            except FutureTimeout:
                log.warning("notifier %s is slow; the release goes on without waiting", name)
            except Exception as exc:
                log.warning("notifier %s failed: %s: %s", name, type(exc).__name__, exc)

    def close(self) -> None:
        for worker in self._workers:
            worker.shutdown(wait=False)


_DEFAULT: Notifier = ConsoleNotifier()
_current: Notifier = _DEFAULT
# Set by `notifying_here`: this context's notifier, ahead of the process's. Releases run
# side by side in threads of one process each keep their own (see canary.report).
_here: contextvars.ContextVar[Notifier | None] = contextvars.ContextVar(
    "canary_notifier", default=None
)


def current_notifier() -> Notifier:
    """Where releases run here send their events (the run log by default)."""
    return _here.get() or _current


@contextlib.contextmanager
def notifying(*notifiers: Notifier, timeout: float = 2.0) -> Iterator[Notifiers]:
    """Send the events of releases run in this block to `notifiers`."""
    global _current
    fan_out = Notifiers(notifiers, timeout=timeout)
    previous, _current = _current, fan_out
    try:
        yield fan_out
    finally:
        _current = previous
        fan_out.close()


@contextlib.contextmanager
def notifying_here(*notifiers: Notifier, timeout: float = 2.0) -> Iterator[Notifiers]:
    """Like `notifying`, for this context only (this thread, and what Prefect runs from it)."""
    fan_out = Notifiers(notifiers, timeout=timeout)
    token = _here.set(fan_out)
    try:
        yield fan_out
    finally:
        _here.reset(token)
        fan_out.close()
