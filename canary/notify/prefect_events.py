"""Release transitions as Prefect events, for Automations and for `canary status`.

Each event is `canary.release.<kind>` (e.g. `canary.release.rollback`) about the resource
`canary.release.<namespace>.<service>.<release id>`, labelled with the namespace,
service and versions; its payload holds the phase, gate, weight, decision and message.
Emitted inside a flow run, Prefect relates it to that run (and its flow and deployment),
so an Automation can match on the service label and `canary status` on the run.
"""

from __future__ import annotations

from typing import Any

from canary.events import ReleaseEvent
from canary.identity import ReleaseIdentity

EVENT_PREFIX = "canary.release."
RESOURCE_PREFIX = "canary.release."


def resource_of(identity: ReleaseIdentity) -> dict[str, str]:
    """The Prefect resource a release's events are about, with its labels."""
    return {
        "prefect.resource.id": (
            f"{RESOURCE_PREFIX}{identity.namespace}.{identity.service}.{identity.release_id}"
        ),
        "prefect.resource.name": identity.versions,
        "canary.namespace": identity.namespace,
        "canary.service": identity.service,
        "canary.stable-version": identity.stable_version,
        "canary.canary-version": identity.canary_version,
        "canary.release-id": identity.release_id,
    }


def payload_of(event: ReleaseEvent) -> dict[str, Any]:
    fields = ("phase", "gate", "canary_weight", "decision", "message")
    return {name: getattr(event, name) for name in fields if getattr(event, name) is not None}


class PrefectEventNotifier:
    """A notifier that emits every release event as a Prefect event."""

    def notify(self, event: ReleaseEvent) -> None:
        from prefect.events import emit_event

        emit_event(
            event=f"{EVENT_PREFIX}{event.kind.value}",
            resource=resource_of(event.identity),
            occurred=event.time,
            payload=payload_of(event),
        )


def release_events(client: Any, run_id: str, limit: int = 50) -> list[Any]:
    """The newest release events of a flow run, newest first (as Prefect `Event`s)."""
    from prefect.events import Event
    from prefect.events.filters import EventFilter, EventNameFilter, EventOrder, EventRelatedFilter

    query = EventFilter(
        event=EventNameFilter(prefix=[EVENT_PREFIX]),
        related=EventRelatedFilter(id=[f"prefect.flow-run.{run_id}"]),
        order=EventOrder.DESC,
    )
    body = {"filter": query.model_dump(mode="json"), "limit": limit}
    page = client.request("POST", "/events/filter", json=body).json()
    return [Event.model_validate(event) for event in page.get("events", [])]
