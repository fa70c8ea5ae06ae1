"""A termination signal that no code may lose: the release remembers SIGTERM itself.

Inside a flow run, Prefect turns SIGTERM (Kubernetes stopping the pod, a worker stopping
the run) into a `TerminationSignal` raised wherever the main thread is at that moment. Raised
inside code that cannot pass an exception on (a finaliser, a C extension's callback such
as a validator's instance check), it is printed as "Exception ignored" and lost, or comes
out as some other error; the release would go on until the grace period ends in SIGKILL,
with no rollback. Python's C signal handler also writes each handled signal's number to
the process's wakeup file descriptor before any Python code runs, so a pipe there keeps
the fact, and the release's checkpoint raises the termination again.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator

from prefect.exceptions import TerminationSignal


class TerminationWatch:
    """Whether this process was sent SIGTERM while the watch was open."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._pipe: tuple[int, int] | None = None  # read end, write end
        self._lock = threading.Lock()

    def open(self) -> TerminationWatch:
        """Start watching; in a thread other than the main one, or where an event loop
        owns the wakeup descriptor, the watch stays closed (Prefect's signal alone)."""
        read_end, write_end = os.pipe()
        os.set_blocking(read_end, False)
        os.set_blocking(write_end, False)  # the signal module requires it
        try:
            previous = signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
        except ValueError:  # not the main thread
            previous = None
        if previous != -1:
            if previous is not None:
                signal.set_wakeup_fd(previous)  # an event loop's: leave it its own
            os.close(read_end)
            os.close(write_end)
            return self
        self._pipe = (read_end, write_end)
        return self

    def close(self) -> None:
        if self._pipe is None:
            return
        read_end, write_end = self._pipe
        self.terminated()  # keep what came before the close
        try:
            previous = signal.set_wakeup_fd(-1)
        except ValueError:  # not the main thread: the pipe stays, a closed descriptor's
            return  # number could be reused and written to by the next signal
        if previous != write_end:
            signal.set_wakeup_fd(previous)  # replaced since: not ours to clear
        with self._lock:
            self._pipe = None
            os.close(read_end)
            os.close(write_end)

    def terminated(self) -> bool:
        """True once SIGTERM arrived, however the code running then took it."""
        with self._lock:
            if self._pipe is not None and self.signal is None:
                self.signal = _first_termination(self._pipe[0])
        return self.signal is not None

    def raise_if_terminated(self) -> None:
        """Raise the termination as Prefect does, so its crash hooks roll back."""
        if self.terminated():
            raise TerminationSignal(signal=self.signal or signal.SIGTERM)


def _first_termination(read_end: int) -> int | None:
    """SIGTERM when it is among the signal numbers written to the pipe so far."""
    found = None
    with contextlib.suppress(BlockingIOError):
        while chunk := os.read(read_end, 512):
            if signal.SIGTERM in chunk:
                found = signal.SIGTERM
    return found


@contextlib.contextmanager
def watching_termination() -> Iterator[TerminationWatch]:
    watch = TerminationWatch().open()
    try:
        yield watch
    finally:
        watch.close()
