"""Release events for tests: the BookInfo release of reviews v1 -> v2 unless told otherwise."""

from __future__ import annotations

from typing import Any

from canary.events import EventKind, ReleaseEvent
from canary.identity import ReleaseIdentity


def identity(release_id: str = "r1", **fields: str) -> ReleaseIdentity:
    defaults = {
        "release_id": release_id,
        "namespace": "default",
        "service": "reviews",
        "stable_version": "v1",
        "canary_version": "v2",
    }
    return ReleaseIdentity(**(defaults | fields))


def release_event(kind: EventKind, release_id: str = "r1", **fields: Any) -> ReleaseEvent:
    return ReleaseEvent(identity=identity(release_id), kind=kind, **fields)
