"""The release being carried out: its plan, its id, where it runs, and how it ended.

`Release` is what every phase task gets. It is plain data (a task parameter); clients
are built from it inside each task (`cluster_of`, `router_of`) and shared by the tasks
of one process.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

from canary.events import Decision, EventKind, ReleaseEvent
from canary.identity import ReleaseIdentity
from canary.notify import current_notifier
from canary.plan import ReleasePlan
from canary.planner import Phase, phase_named

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

    from canary.cluster import Cluster
    from canary.routing import Router

Outcome = Literal["promoted", "rolled-back", "failed"]


class ReleaseTarget(BaseModel):
    """Where a release runs: the API server (kubeconfig and context) and the mesh's entry."""

    model_config = ConfigDict(frozen=True)

    kubeconfig: str | None = Field(
        None, description="Path of a kubeconfig; default $KUBECONFIG, else in-cluster."
    )
    kube_context: str | None = Field(None, description="The kubeconfig context to use.")
    mesh_url: str | None = Field(
        None, description="Where the test phase sends its checks (default: tests.baseUrl)."
    )

    def api_client(self) -> ApiClient:
        """The process's shared client for this API server (canary.cluster.api_client)."""
        from canary.cluster import api_client

        return api_client(self.kubeconfig, self.kube_context)


class Release(BaseModel):
    """One release: the plan, the id it runs under, where, and who started it."""

    model_config = ConfigDict(frozen=True)

    plan: ReleasePlan
    release_id: str
    target: ReleaseTarget = Field(default_factory=ReleaseTarget)
    initiator: str | None = None  # who started it, for four-eyes gates
    retry_of: str | None = None  # the rolled-back flow run this release retries

    @property
    def identity(self) -> ReleaseIdentity:
        return ReleaseIdentity.of(self.plan, self.release_id)

    def phase(self, name: str) -> Phase:
        return phase_named(self.plan, name)

    def has_phase(self, name: str) -> bool:
        try:
            self.phase(name)
        except KeyError:
            return False
        return True


def cluster_of(release: Release) -> Cluster:
    from canary.cluster import Cluster

    return Cluster(release.target.api_client(), release.plan.namespace)


def router_of(release: Release) -> Router:
    from canary.routing.factory import router_for

    return router_for(release.plan, release.target.api_client())


def emit(
    release: Release,
    kind: EventKind,
    phase: str | None = None,
    *,
    canary_weight: int | None = None,
    decision: Decision | None = None,
    message: str = "",
) -> None:
    """Send a release event to the current notifier."""
    event = ReleaseEvent(
        identity=release.identity,
        kind=kind,
        phase=phase,
        canary_weight=canary_weight,
        decision=decision,
        message=message,
    )
    current_notifier().notify(event)


# --- how it went ------------------------------------------------------------------------


def _now() -> datetime:
    return datetime.now(UTC)


class PhaseRecord(BaseModel):
    """One phase as it ran: its weight, when it started and ended, how."""

    name: str
    canary_weight: int
    started: datetime = Field(default_factory=_now)
    finished: datetime | None = None
    outcome: Literal["running", "completed", "failed"] = "running"

    @property
    def seconds(self) -> float | None:
        return (self.finished - self.started).total_seconds() if self.finished else None


class ReleaseResult(BaseModel):
    """How a release ended, and the phases it ran."""

    identity: ReleaseIdentity
    outcome: Outcome
    reason: str
    failed_phase: str | None = None
    retry_of: str | None = None  # the rolled-back flow run this release retried
    started: datetime
    finished: datetime
    phases: list[PhaseRecord]

    @property
    def duration(self) -> float:
        return (self.finished - self.started).total_seconds()
