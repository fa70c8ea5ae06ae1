"""Releases run in a background thread, so a test can act on them while they run."""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable
from typing import Any


def start_in_thread(work: Callable[[], None]) -> threading.Thread:
    """`work` in a daemon thread carrying this context (Prefect's settings and server)."""
    thread = threading.Thread(target=contextvars.copy_context().run, args=(work,), daemon=True)
    thread.start()
    return thread


def release_outcome(plan: Any, box: Any, release_id: str | None = None) -> Any:
    """canary_release against a sandbox: its result, or the ReleaseRolledBack it raised."""
    from flows.canary_release import ReleaseRolledBack, canary_release

    try:
        return canary_release(
            plan,
            target=box.target,
            release_id=release_id,
        )
    except ReleaseRolledBack as exc:
        return exc
