"""Fault injection: the troubles a release meets in a real cluster, at seeded rates.

A chaos spec is a comma-separated list of ``name=value`` (``canary sandbox --chaos SPEC``,
or ``Sandbox(chaos=SPEC)``)::

    seed=7              one seeded generator draws every API fault
    api-500=0.1         share of API requests answered 500 InternalError (before any effect)
    api-409=0.1         share of writes answered 409 Conflict, as after a concurrent writer
    api-slow=0.2        share of API requests answered late, by ``slow`` (default 300ms)
    api-drop=0.02       share of API requests whose connection is closed without an answer
    api-stall=0.01      share of API requests held for ``stall`` (default 20s), then dropped:
                        past the client's read timeout, a real timeout
    metrics-down=5s+10s ``/metrics`` answers 503 from 5 s after start for 10 s: Prometheus
                        scrapes fail and its series have a gap
    flap=0.3            readiness flapping: in each ``flap-window`` (default 1s) the ready
                        pods of a template turn unready with this probability
    flap-versions=v2    only pods with these ``version`` labels flap (``+``-separated;
                        default every pod)

API faults are drawn at request entry, one per request at most, never for ``/debug/``
paths. Flapping is a pure function of (seed, pod template, window), so the readiness controller
and anyone checking it agree on which pods were down when. ``injected`` counts what was done.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import random
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from http.server import BaseHTTPRequestHandler
from typing import Any

from canary.durations import format_duration, parse_duration

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_REASONS = {500: "InternalError", 409: "Conflict"}
_MESSAGES = {
    500: "chaos: injected internal error",
    409: "Operation cannot be fulfilled: the object has been modified; please apply your "
    "changes to the latest version and try again (chaos)",
}


@dataclass(frozen=True)
class ChaosSpec:
    seed: int = 0
    api_500: float = 0.0
    api_409: float = 0.0
    api_slow: float = 0.0
    slow: float = 0.3
    api_drop: float = 0.0
    api_stall: float = 0.0
    stall: float = 20.0
    metrics_down: tuple[float, float] | None = None  # (after, for) seconds
    flap: float = 0.0
    flap_window: float = 1.0
    flap_versions: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> ChaosSpec:
        """A spec from its text; ValueError naming the bad item."""
        spec = cls()
        for item in (part.strip() for part in text.split(",")):
            if not item:
                continue
            name, sep, value = item.partition("=")
            attr = name.strip().replace("-", "_")
            if not sep or attr not in _PARSERS:
                known = ", ".join(f.name.replace("_", "-") for f in fields(cls))
                raise ValueError(f"chaos: {item!r}: expected name=value with name one of {known}")
            try:
                spec = replace(spec, **{attr: _PARSERS[attr](value.strip())})
            except ValueError as exc:
                raise ValueError(f"chaos: {name}: {exc}") from None
        return spec


def _rate(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{text} is not a rate between 0 and 1")
    return value


def _window(text: str) -> tuple[float, float]:
    after, plus, length = text.partition("+")
    if not plus:
        raise ValueError(f"{text!r}: write AFTER+FOR, e.g. 5s+10s")
    return parse_duration(after), parse_duration(length)


_DURATIONS = ("slow", "stall", "flap_window")
_PARSERS: dict[str, Callable[[str], Any]] = {
    "seed": int,
    "api_500": _rate,
    "api_409": _rate,
    "api_slow": _rate,
    "slow": parse_duration,
    "api_drop": _rate,
    "api_stall": _rate,
    "stall": parse_duration,
    "metrics_down": _window,
    "flap": _rate,
    "flap_window": parse_duration,
    "flap_versions": lambda text: tuple(v for v in text.split("+") if v),
}


class Chaos:
    """The faults of one sandbox, drawn from a ChaosSpec."""

    def __init__(self, spec: ChaosSpec | str, clock: Callable[[], float] = time.monotonic):
        self.spec = ChaosSpec.parse(spec) if isinstance(spec, str) else spec
        self.injected: Counter[str] = Counter()
        self._clock = clock
        self._rng = random.Random(self.spec.seed)
        self._lock = threading.Lock()
        self._started = clock()
        self._outage: tuple[float, float] | None = None
        self._flaps: set[tuple[str, int]] = set()  # (template, window): each counted once

    def restart_clock(self) -> None:
        """Windows (metrics-down) count from now: the sandbox calls this when it starts."""
        self._started = self._clock()

    # --- the API server: one check at request entry -------------------------------------

    def intercept(self, handler: BaseHTTPRequestHandler, record: Callable[[int], None]) -> bool:
        """Apply at most one fault to the handler's request; True when it answered it.

        ``record(status)`` enters the request in the API server's log (0: no answer).
        """
        fault = self._draw(handler.command, handler.path)
        if fault is None:
            return False
        with self._lock:
            self.injected[fault] += 1
        if fault == "slow":
            time.sleep(self.spec.slow)
            return False
        if fault in ("500", "409"):
            record(int(fault))
            _answer(handler, int(fault))
            return True
        if fault == "stall":
            time.sleep(self.spec.stall)
        record(0)
        _hang_up(handler)
        return True

    def _draw(self, method: str, path: str) -> str | None:
        if path.startswith("/debug/"):
            return None
        s = self.spec
        odds = [("500", s.api_500), ("drop", s.api_drop), ("stall", s.api_stall)]
        if method in WRITE_METHODS:
            odds.append(("409", s.api_409))
        odds.append(("slow", s.api_slow))
        with self._lock:
            for fault, rate in odds:
                if rate and self._rng.random() < rate:
                    return fault
        return None

    # --- metrics ------------------------------------------------------------------------

    def metrics_down(self) -> bool:
        """Whether /metrics is down now (the spec's window, or an outage started by hand)."""
        now = self._clock()
        windows = [self._outage]
        if self.spec.metrics_down is not None:
            after, length = self.spec.metrics_down
            windows.append((self._started + after, self._started + after + length))
        down = any(w is not None and w[0] <= now < w[1] for w in windows)
        if down:
            with self._lock:
                self.injected["metrics-503"] += 1
        return down

    def metrics_outage(self, seconds: float) -> None:
        """Take /metrics down from now for `seconds` (tests time it to a release's phase)."""
        now = self._clock()
        self._outage = (now, now + seconds)

    # --- readiness flapping ---------------------------------------------------------------

    def flapped(self, pod: dict[str, Any], now: float) -> bool:
        """Whether a pod that would be ready is unready now because it flaps."""
        s = self.spec
        if not s.flap:
            return False
        labels = pod.get("metadata", {}).get("labels") or {}
        if s.flap_versions and labels.get("version") not in s.flap_versions:
            return False
        window = int((now - self._started) // s.flap_window)
        # The pod template, not the pod's random uid: the same seed flaps the same way.
        template = labels.get("pod-template-hash") or pod["metadata"].get("uid", "")
        key = f"{s.seed}:{template}:{window}".encode()
        down = int.from_bytes(hashlib.sha256(key).digest()[:8], "big") / 2**64 < s.flap
        if down:
            with self._lock:
                self._flaps.add((template, window))
                self.injected["flap"] = len(self._flaps)
        return down

    def next_flap_change(self, now: float) -> float | None:
        """When flapping may next change a pod's readiness (the next window's start)."""
        s = self.spec
        if not s.flap:
            return None
        elapsed = now - self._started
        return self._started + (elapsed // s.flap_window + 1) * s.flap_window

    def describe(self) -> str:
        """The spec as written: only what differs from no chaos."""
        parts = []
        for f in fields(self.spec):
            value = getattr(self.spec, f.name)
            if value == f.default:
                continue
            if f.name in _DURATIONS:
                value = format_duration(value)
            elif f.name == "metrics_down":
                value = "+".join(format_duration(v) for v in value)
            elif f.name == "flap_versions":
                value = "+".join(value)
            parts.append(f"{f.name.replace('_', '-')}={value}")
        return ",".join(parts) or "none"


def _answer(handler: BaseHTTPRequestHandler, code: int) -> None:
    """A Status answer as the API server gives it."""
    body = json.dumps(
        {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
         "message": _MESSAGES[code], "reason": _REASONS[code], "code": code}
    ).encode()  # fmt: skip
    handler.send_response(code)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


def _hang_up(handler: BaseHTTPRequestHandler) -> None:
    """Close the connection without a word: the client sees a reset or a timeout."""
    handler.close_connection = True
    with contextlib.suppress(OSError):
        handler.connection.shutdown(socket.SHUT_RDWR)
