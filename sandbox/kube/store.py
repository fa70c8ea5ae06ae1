"""Thread-safe in-memory object store behind the sandbox's Kubernetes API.

Objects are plain JSON-like dicts keyed by ``(resource plural, namespace, name)``; cluster
scoped objects use the namespace ``""``. The store owns the metadata the API server keeps
for every object: ``uid``, ``creationTimestamp``, ``resourceVersion`` (one global counter,
as etcd's revision) and ``generation`` (bumped when anything but metadata and status
changes). Every write appends an event to a bounded history that watches read from.

Stored dicts are never mutated after they are stored: writers build a new dict, so an
event can share it with the table, and readers get their own copies.
"""

from __future__ import annotations

import threading
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

Obj = dict[str, Any]
Key = tuple[str, str]  # (namespace or "", name)


class StoreError(Exception):
    """Base of the errors the API server turns into ``Status`` answers."""

    def __init__(self, resource: str, name: str, message: str = "") -> None:
        super().__init__(message or f"{resource} {name!r}")
        self.resource = resource
        self.name = name


class NotFound(StoreError):
    pass


class AlreadyExists(StoreError):
    pass


class Conflict(StoreError):
    pass


class Gone(Exception):
    """A watch asked for history the store no longer keeps."""


@dataclass(frozen=True, slots=True)
class Event:
    revision: int
    resource: str
    type: str  # ADDED | MODIFIED | DELETED
    object: Obj
    previous: Obj | None


def clone(value: Any) -> Any:
    """Deep copy of JSON-like data, several times faster than ``copy.deepcopy``."""
    if isinstance(value, dict):
        return {k: clone(v) for k, v in value.items()}
    if isinstance(value, list):
        return [clone(v) for v in value]
    return value


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _body(obj: Obj) -> Obj:
    """What the generation tracks: everything but metadata and status."""
    return {k: v for k, v in obj.items() if k not in ("metadata", "status")}


class ObjectStore:
    def __init__(self, history: int = 20_000) -> None:
        self._cond = threading.Condition(threading.RLock())
        self._tables: dict[str, dict[Key, Obj]] = {}
        self._rev = 0
        self._events: deque[Event] = deque(maxlen=history)
        self._oldest_kept = 0  # watches from below this revision get Gone

    # ----------------------------------------------------------------- reads
    def revision(self) -> int:
        return self._rev

    def get(self, resource: str, namespace: str | None, name: str) -> Obj | None:
        with self._cond:
            obj = self._tables.get(resource, {}).get((namespace or "", name))
            return clone(obj) if obj is not None else None

    def list(self, resource: str, namespace: str | None = None) -> list[Obj]:
        return [clone(o) for o in self.snapshot(resource, namespace)[0]]

    def snapshot(self, resource: str, namespace: str | None = None) -> tuple[list[Obj], int]:
        """Shared (read-only) objects sorted by key, and the revision they reflect."""
        with self._cond:
            table = self._tables.get(resource, {})
            keys = sorted(k for k in table if namespace is None or k[0] == namespace)
            return [table[k] for k in keys], self._rev

    def resources(self) -> list[str]:
        with self._cond:
            return [r for r, t in self._tables.items() if t]

    # ---------------------------------------------------------------- writes
    def create(self, resource: str, obj: Obj, *, dry_run: bool = False) -> Obj:
        meta = obj.setdefault("metadata", {})
        key = (meta.get("namespace") or "", meta["name"])
        with self._cond:
            table = self._tables.setdefault(resource, {})
            if key in table:
                raise AlreadyExists(resource, key[1])
            meta.pop("resourceVersion", None)
            meta.update(uid=str(uuid.uuid4()), creationTimestamp=now_rfc3339(), generation=1)
            meta.pop("deletionTimestamp", None)
            return self._commit(resource, key, obj, None, dry_run)

    def update(
        self,
        resource: str,
        namespace: str | None,
        name: str,
        mutate: Callable[[Obj], Obj],
        *,
        dry_run: bool = False,
    ) -> Obj:
        """Atomic read-modify-write. ``mutate`` gets a private copy and returns the new
        object; a ``metadata.resourceVersion`` it leaves set must still be current."""
        key = (namespace or "", name)
        with self._cond:
            current = self._tables.get(resource, {}).get(key)
            if current is None:
                raise NotFound(resource, name)
            new = mutate(clone(current))
            meta = new.setdefault("metadata", {})
            rv = meta.get("resourceVersion")
            if rv not in (None, "") and str(rv) != current["metadata"]["resourceVersion"]:
                raise Conflict(resource, name)
            old_meta = current["metadata"]
            for field in ("uid", "creationTimestamp", "name"):
                meta[field] = old_meta[field]
            if key[0]:
                meta["namespace"] = key[0]
            meta["resourceVersion"] = old_meta["resourceVersion"]
            generation = old_meta.get("generation", 1)
            meta["generation"] = generation + (_body(new) != _body(current))
            if new == current:
                return clone(current)  # no-op writes keep the resourceVersion, as etcd does
            return self._commit(resource, key, new, current, dry_run)

    def replace(self, resource: str, obj: Obj, *, dry_run: bool = False) -> Obj:
        meta = obj["metadata"]
        return self.update(
            resource, meta.get("namespace"), meta["name"], lambda _: obj, dry_run=dry_run
        )

    def delete(
        self, resource: str, namespace: str | None, name: str, *, dry_run: bool = False
    ) -> Obj:
        key = (namespace or "", name)
        with self._cond:
            current = self._tables.get(resource, {}).get(key)
            if current is None:
                raise NotFound(resource, name)
            if dry_run:
                return clone(current)
            del self._tables[resource][key]
            self._rev += 1
            # The DELETED event carries the object at a new resourceVersion, as the API does.
            gone = current | {"metadata": current["metadata"] | {"resourceVersion": str(self._rev)}}
            self._record(resource, "DELETED", gone, current)
            return clone(gone)

    def _commit(
        self, resource: str, key: Key, obj: Obj, previous: Obj | None, dry_run: bool
    ) -> Obj:
        if dry_run:
            obj["metadata"]["resourceVersion"] = str(self._rev)
            return obj
        self._rev += 1
        obj["metadata"]["resourceVersion"] = str(self._rev)
        stored = clone(obj)
        self._tables.setdefault(resource, {})[key] = stored
        self._record(resource, "ADDED" if previous is None else "MODIFIED", stored, previous)
        return obj

    def _record(self, resource: str, kind: str, obj: Obj, previous: Obj | None) -> None:
        if len(self._events) == self._events.maxlen:
            self._oldest_kept = self._events[0].revision + 1
        self._events.append(Event(self._rev, resource, kind, obj, previous))
        self._cond.notify_all()

    # --------------------------------------------------------------- watches
    def events_after(self, revision: int) -> list[Event]:
        """Events with a revision above ``revision``; Gone when that history was dropped."""
        with self._cond:
            if revision + 1 < self._oldest_kept:
                raise Gone(f"too old resource version: {revision} ({self._oldest_kept})")
            if not self._events or self._events[-1].revision <= revision:
                return []
            return list(_tail(self._events, revision))

    def wait(self, revision: int, timeout: float) -> int:
        """Block until the store's revision exceeds ``revision`` (or timeout, or poke)."""
        with self._cond:
            if self._rev <= revision:
                self._cond.wait(timeout)
            return self._rev

    def poke(self) -> None:
        """Wake every waiter, e.g. so that watches notice a server stopping."""
        with self._cond:
            self._cond.notify_all()


def _tail(events: deque[Event], revision: int) -> Iterator[Event]:
    # Recent history is what watches ask for, so scan from the newest end.
    found: list[Event] = []
    for ev in reversed(events):
        if ev.revision <= revision:
            break
        found.append(ev)
    return reversed(found)
