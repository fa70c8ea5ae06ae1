"""A clock for code that waits: `monotonic()` and `sleep()` in virtual time.

Monkeypatch a module's `time` with it and the module's waits take no real time and are
exact, whatever the machine is doing: tests of cadences and deadlines then assert what
the code decided, not how fast the machine was.
"""

from __future__ import annotations

import threading


class FakeClock:
    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.slept: list[float] = []
        self._lock = threading.Lock()

    def monotonic(self) -> float:
        with self._lock:
            return self.now

    def time(self) -> float:
        return self.monotonic()

    def sleep(self, seconds: float) -> None:
        self.advance(seconds)
        self.slept.append(seconds)

    def advance(self, seconds: float) -> None:
        """Time passing while the code does something (a slow round, a slow call)."""
        with self._lock:
            self.now += max(seconds, 0.0)
