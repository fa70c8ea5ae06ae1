"""Every version of a release's routing objects that the real server stored, as a watch sees
them, and the planner's states each version must be.

A watch delivers each write the server accepted, in order, so a state held for a few
milliseconds between two phases is seen too: that is what the mesh could have routed by.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from kubernetes import client as k8s
from kubernetes import watch
from kubernetes.client.exceptions import ApiException

from canary.lease import annotations_of
from canary.plan import ReleasePlan
from canary.planner import (
    PHASE_ANNOTATION,
    RELEASE_ANNOTATION,
    ROLLED_BACK_PHASE,
    RoutingState,
    phases,
    rollback_routing,
    routing_for,
    same_routing,
    unrouted,
)
from canary.routing.istio import with_all_subsets
from tests.support.waiting import wait_until

ISTIO = ("networking.istio.io", "v1")
GATEWAY_API = ("gateway.networking.k8s.io", "v1")
WATCH_WINDOW_S = 2  # each watch request ends after this; the next resumes where it stopped


@dataclass
class ObjectHistory:
    """The versions of one kind of custom object in a namespace, from a watch.

    Use as ``with ObjectHistory(api, ns, *ISTIO, "virtualservices") as history:``; it
    lists first and watches from that list's resourceVersion, so nothing written after
    ``__enter__`` returns is missed.
    """

    api: Any
    namespace: str
    group: str
    version: str
    plural: str
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._custom = k8s.CustomObjectsApi(self.api)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._resource_version = ""

    def __enter__(self) -> ObjectHistory:
        listed = self._custom.list_namespaced_custom_object(
            self.group, self.version, self.namespace, self.plural
        )
        self._resource_version = listed["metadata"]["resourceVersion"]
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(WATCH_WINDOW_S * 5)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._watch_once()
            except ApiException as failed:  # 410 Gone included: a version would be lost
                self.errors.append(f"watch {self.plural}: {failed.status} {failed.reason}")
                return

    def _watch_once(self) -> None:
        stream = watch.Watch().stream(
            self._custom.list_namespaced_custom_object,
            self.group,
            self.version,
            self.namespace,
            self.plural,
            resource_version=self._resource_version,
            allow_watch_bookmarks=True,
            timeout_seconds=WATCH_WINDOW_S,
        )
        for event in stream:
            obj = event["object"]
            self._resource_version = obj["metadata"]["resourceVersion"]
            if event["type"] in ("ADDED", "MODIFIED", "DELETED"):
                with self._lock:
                    self.events.append((event["type"], obj))

    def versions(self, name: str) -> list[dict[str, Any]]:
        """The object's stored versions, oldest first (deletions left out)."""
        with self._lock:
            return [o for kind, o in self.events if kind != "DELETED" and _named(o, name)]

    def caught_up(self, name: str, timeout: float = 30) -> list[dict[str, Any]]:
        """The versions, once the watch has delivered the one the server holds now."""
        try:
            now = self._custom.get_namespaced_custom_object(
                self.group, self.version, self.namespace, self.plural, name
            )["metadata"]["resourceVersion"]
        except ApiException as missing:
            if missing.status != 404:
                raise
            now = None

        def delivered() -> bool:
            with self._lock:
                last = next((o for _, o in reversed(self.events) if _named(o, name)), None)
                kind = next((k for k, o in reversed(self.events) if _named(o, name)), None)
            if now is None:
                return kind == "DELETED"
            return last is not None and last["metadata"]["resourceVersion"] == now

        wait_until(delivered, timeout, message=f"the watch to deliver {self.plural}/{name}")
        assert not self.errors, self.errors
        return self.versions(name)


def _named(obj: dict[str, Any], name: str) -> bool:
    return obj["metadata"]["name"] == name


# --- the planner's states --------------------------------------------------------------


def planned_states(
    plan: ReleasePlan, release_id: str, rolled_back_after: str | None = None
) -> dict[str, RoutingState]:
    """Each phase's routing as the planner makes it, phase after phase from no routing (the
    rollback state too, from the phase named ``rolled_back_after``)."""
    states: dict[str, RoutingState] = {}
    current: RoutingState | None = None
    for phase in phases(plan):
        current = routing_for(plan, phase, release_id, current)
        states[phase.name] = current
        if phase.name == rolled_back_after:
            states[ROLLED_BACK_PHASE] = rollback_routing(plan, release_id, current)
            break
    return states


def phase_of(obj: dict[str, Any]) -> str | None:
    return annotations_of(obj).get(PHASE_ANNOTATION)


def phases_seen(versions: Iterable[dict[str, Any]]) -> list[str]:
    """The phase annotations in the order they appeared, each once."""
    seen: list[str] = []
    for obj in versions:
        phase = phase_of(obj)
        if phase is not None and (not seen or seen[-1] != phase):
            seen.append(phase)
    return seen


def unplanned(
    versions: Iterable[dict[str, Any]],
    planned: dict[str | None, dict[str, Any]],
    release_id: str,
) -> list[str]:
    """The versions that are not the planner's object for the phase they are annotated
    with, nor written by this release (one line each, for the assertion message).

    A version without a phase is the route object as the release creates it to hold its
    lease before the first phase: ``planned[None]`` when the kind has one.
    """
    wrong = []
    for obj in versions:
        notes = annotations_of(obj)
        phase = notes.get(PHASE_ANNOTATION)
        revision = obj["metadata"]["resourceVersion"]
        if phase is None:
            if None not in planned or obj.get("spec") != planned[None]["spec"]:
                wrong.append(f"rv {revision} (no phase): {obj.get('spec')}")
        elif notes.get(RELEASE_ANNOTATION) != release_id:
            wrong.append(f"rv {revision}: release {notes.get(RELEASE_ANNOTATION)!r}")
        elif phase not in planned or not same_routing(planned[phase], obj):
            wrong.append(f"rv {revision} ({phase}): {obj['spec']}")
    return wrong


def route_objects(
    plan: ReleasePlan, states: dict[str, RoutingState]
) -> dict[str | None, dict[str, Any]]:
    """Per phase the object holding the routes (VirtualService, HTTPRoute); under None the
    one the release creates to hold its lease when there is none (the planner's unrouted)."""
    return {None: unrouted(plan)} | {name: state.route for name, state in states.items()}


def destination_rule_versions(
    states: dict[str, RoutingState],
) -> list[dict[str | None, dict[str, Any]]]:
    """Per phase, the DestinationRules the router may store: the planner's, and, while it
    moves to it, the planner's with the previous phase's subsets kept (make-before-break)."""
    exact: dict[str | None, dict[str, Any]] = {
        name: state.destination_rule for name, state in states.items()
    }
    names = list(states)
    widened = {
        name: with_all_subsets(exact[name], exact[previous])
        for previous, name in itertools.pairwise(names)
    }
    return [exact, widened]


def unplanned_destination_rules(
    versions: Iterable[dict[str, Any]], states: dict[str, RoutingState], release_id: str
) -> list[str]:
    versions = list(versions)
    candidates = destination_rule_versions(states)
    wrong_by_candidate = [set(unplanned(versions, c, release_id)) for c in candidates]
    return sorted(set.intersection(*wrong_by_candidate))
