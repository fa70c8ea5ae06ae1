"""A Prefect progress artifact showing the canary's share of traffic, kept up to date."""

from __future__ import annotations

from uuid import UUID

from canary.events import ROUTED_WEIGHT, ReleaseEvent
from canary.identity import ReleaseIdentity
from canary.report.publishing import artifact_key


class ProgressNotifier:
    """A notifier: creates the artifact at the first event, updates it when the weight moves."""

    def __init__(self, identity: ReleaseIdentity):
        self.key = artifact_key("release-progress", identity.namespace, identity.service)
        self.description = f"Share of {identity.service} traffic on {identity.canary_version}"
        self._id: UUID | None = None
        self._weight: int | None = None

    def notify(self, event: ReleaseEvent) -> None:
        from prefect.artifacts import create_progress_artifact, update_progress_artifact

        moved = event.kind in ROUTED_WEIGHT and event.canary_weight is not None
        weight = event.canary_weight if moved else self._weight or 0
        if self._id is None:
            self._id = create_progress_artifact(
                progress=float(weight), key=self.key, description=self.description
            )
        elif weight != self._weight:
            update_progress_artifact(artifact_id=self._id, progress=float(weight))
        self._weight = weight
