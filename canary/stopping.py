"""Stopping a running release from outside: `canary abort`, and a cancellation in Prefect.

`canary abort RUN` stores a request in the Prefect Variable `canary-abort-<run id>`; the
run's `StopWatch` (started by the guard, see canary.ownership) polls it and the run's
state every STOP_POLL_S seconds, in a thread of its own so that analysis rounds never
wait on the Prefect API. The release sees the answer at its next checkpoint and rolls
back.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime

from canary.errors import CanaryError
from canary.prefect_runs import run_state
from canary.prefect_variables import ABORT_PREFIX, load, store, var_name

log = logging.getLogger(__name__)

STOP_POLL_S = 2.0  # how soon an abort or a cancellation is seen (plus one round)


class ReleaseStopped(CanaryError):
    """The release was asked to stop; it rolls back."""


class ReleaseAborted(ReleaseStopped):
    pass


class ReleaseCancelled(ReleaseStopped):
    pass


def request_abort(run_id: str, who: str = "") -> None:
    """Ask a release to stop at its next step; it rolls back."""
    at = datetime.now(UTC).isoformat()
    store(var_name(ABORT_PREFIX, str(run_id)), {"by": who, "at": at})


def abort_requested(run_id: str) -> bool:
    return bool(load(var_name(ABORT_PREFIX, str(run_id))))


def abort_requested_by(run_id: str) -> str:
    value = load(var_name(ABORT_PREFIX, str(run_id))) or {}
    return value.get("by") or "someone"


def stop_requested(run_id: str) -> ReleaseStopped | None:
    """Why the run must stop (`canary abort`, a cancellation), or None."""
    if abort_requested(run_id):
        return ReleaseAborted(f"aborted (canary abort {run_id})")
    if being_cancelled(run_id):
        return ReleaseCancelled("cancelled from Prefect")
    return None


def being_cancelled(run_id: str) -> bool:
    state = run_state(run_id)
    return state is not None and (state.is_cancelling() or state.is_cancelled())


class StopWatch:
    """Polls whether a run must stop until `close()`; `stopped` holds the first answer."""

    def __init__(self, run_id: str | None):
        self.run_id = run_id
        self.stopped: ReleaseStopped | None = None
        self._closed = threading.Event()

    def watch(self) -> None:
        """The polling loop; run it in a thread."""
        while self.run_id is not None and not self._closed.wait(STOP_POLL_S):
            try:
                self.stopped = stop_requested(self.run_id)
            except Exception as exc:  # the Prefect API is down: the release goes on
                log.warning("cannot tell whether %s must stop: %s", self.run_id, exc)
            if self.stopped is not None:
                return

    def close(self) -> None:
        self._closed.set()
