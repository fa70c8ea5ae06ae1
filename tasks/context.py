"""What every phase task gets: the plan and where to reach the cluster.

The context is plain data (it is a task parameter); clients are built from it inside
each task and shared by the tasks of one process.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from canary.cluster import Cluster, api_client
from canary.events import EventKind, ReleaseEvent
from canary.notify import current_notifier
from canary.plan import ReleasePlan
from canary.planner import Phase, phase_named
from canary.routing.istio import IstioRouter


class ReleaseContext(BaseModel):
    model_config = ConfigDict(frozen=True)

    plan: ReleasePlan
    release_id: str
    kubeconfig: str | None = None
    kube_context: str | None = None
    mesh_url: str | None = None

    def phase(self, name: str) -> Phase:
        return phase_named(self.plan, name)

    def has_phase(self, name: str) -> bool:
        try:
            self.phase(name)
        except KeyError:
            return False
        return True


def cluster_of(ctx: ReleaseContext) -> Cluster:
    return Cluster(api_client(ctx.kubeconfig, ctx.kube_context), ctx.plan.namespace)


def router_of(ctx: ReleaseContext) -> IstioRouter:
    plan = ctx.plan
    api = api_client(ctx.kubeconfig, ctx.kube_context)
    return IstioRouter(api, plan.namespace, plan.virtual_service, plan.destination_rule)


def emit(
    ctx: ReleaseContext,
    kind: EventKind,
    phase: str | None = None,
    *,
    canary_weight: int | None = None,
    message: str = "",
) -> None:
    """Send a release event to the current notifier."""
    plan = ctx.plan
    event = ReleaseEvent(
        release_id=ctx.release_id,
        service=plan.service,
        namespace=plan.namespace,
        stable_version=plan.stable.version,
        canary_version=plan.canary.version,
        kind=kind,
        phase=phase,
        canary_weight=canary_weight,
        message=message,
    )
    current_notifier().notify(event)
