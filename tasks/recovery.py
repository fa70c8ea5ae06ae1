"""The flow's state hooks: roll back a release whose run was cancelled or crashed.

When a run is cancelled from the Prefect UI its worker terminates the flow process, and
when a run crashes (a termination signal, an error the engine cannot hand to the flow) the
flow's own code does not get to roll back. Prefect then calls `roll_back_stopped_run`, in
the flow's process, or in the runner supervising it: it rolls back, unless this run never
held the service (a refused run changed nothing, and must not undo another's release).
"""

from __future__ import annotations

import logging
from typing import Any

from canary.cluster import api_client
from canary.events import EventKind
from canary.lease import VirtualServiceLease, lease_of
from canary.plan import ReleasePlan
from tasks.context import ReleaseContext, emit
from tasks.guard import guarded_by, lease_ttl
from tasks.phases import land_rollback

log = logging.getLogger(__name__)


def roll_back_stopped_run(flow: Any, flow_run: Any, state: Any) -> None:
    """on_cancellation / on_crashed: all traffic back to stable, then give the lease back."""
    run_id = str(flow_run.id)
    guarded = guarded_by(run_id)
    ctx = guarded.ctx if guarded is not None else context_from_parameters(flow_run)
    if ctx is None:
        log.warning("run %s: cannot tell which release to roll back", run_id)
        return
    lease = guarded.lease if guarded is not None else _lease(ctx)
    held = lease_of(lease.read())
    if held is None or held.holder != run_id:
        log.info("run %s does not hold %s: nothing to roll back", run_id, ctx.plan.service)
        return
    ctx = ctx.model_copy(update={"release_id": held.release_id})
    reason = f"run {str(state.name).lower()}" + (f": {state.message}" if state.message else "")
    emit(ctx, EventKind.ROLLBACK, message=f"rolling back: {reason}")
    try:
        done = land_rollback(ctx)
    except Exception as exc:  # a hook must not raise; say it loudly instead
        emit(ctx, EventKind.FAILED, message=f"{reason}; rollback failed: {exc}")
        lease.release(held.release_id, held.holder, "failed")
        return
    emit(ctx, EventKind.ROLLBACK, canary_weight=0, message=f"done: {done}")
    lease.release(held.release_id, held.holder, "rolled-back")


def context_from_parameters(flow_run: Any) -> ReleaseContext | None:
    """The release context from a canary-release run's parameters (a runner's hook)."""
    params = dict(getattr(flow_run, "parameters", None) or {})
    plan = params.get("plan")
    if isinstance(plan, dict):
        plan = ReleasePlan.model_validate(plan)
    if not isinstance(plan, ReleasePlan):
        return None
    return ReleaseContext(
        plan=plan,
        release_id=str(flow_run.id),
        kubeconfig=params.get("kubeconfig"),
        kube_context=params.get("context"),
        mesh_url=params.get("mesh_url"),
    )


def _lease(ctx: ReleaseContext) -> VirtualServiceLease:
    api = api_client(ctx.kubeconfig, ctx.kube_context)
    return VirtualServiceLease(api, ctx.plan, ttl=lease_ttl())
