"""The flow's state hooks: roll back a release whose run was cancelled or crashed.

When a run is cancelled from the Prefect UI its worker terminates the flow process, and
when a run crashes (a termination signal, an error the engine cannot hand to the flow) the
flow's own code does not get to roll back. Prefect then calls `roll_back_stopped_run`, in
the flow's process, or in the runner supervising it: it rolls back, unless this run never
held the service (a refused run changed nothing, and must not undo another's release).
Once the run's guard has let go (or in the runner) the release is rebuilt from the run's
parameters, as the run built it: a plan file, `version` and `image` overrides included.
"""

from __future__ import annotations

import logging
from typing import Any

from canary.cluster import api_client
from canary.events import EventKind
from canary.lease import VirtualServiceLease, identity_of, lease_of
from canary.plan import ReleasePlan
from canary.plan_file import plan_from_dict
from canary.plan_source import plan_to_release
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
    if held.identity != identity_of(ctx.plan):  # e.g. its plan file was edited since
        wrong = identity_of(ctx.plan)
        log.warning("run %s holds %s, not %s: not rolled back", run_id, held.identity, wrong)
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
    """The release context from a canary-release run's parameters (a runner's hook).

    Two flows are named canary-release: `canary_release` (an inline plan) and the
    deployment's `release` (a plan file, `version`/`image` overrides). The plan is rebuilt
    as the run built it: another plan would name another release.
    """
    params = dict(getattr(flow_run, "parameters", None) or {})
    plan = _plan_of(params, str(flow_run.id))
    if plan is None:
        return None
    return ReleaseContext(
        plan=plan,
        release_id=str(flow_run.id),
        kubeconfig=params.get("kubeconfig"),
        kube_context=params.get("context"),
        mesh_url=params.get("mesh_url"),
    )


def _plan_of(params: dict[str, Any], run_id: str) -> ReleasePlan | None:
    plan = params.get("plan")
    try:
        if isinstance(plan, dict):  # the API stores an inline plan as JSON
            plan = plan_from_dict(plan, "<inline plan>")
        if not isinstance(plan, str | ReleasePlan):
            return None
        return plan_to_release(plan, params.get("version"), params.get("image"))
    except Exception as exc:  # a hook must not raise: a plan file gone, edited, refused
        log.warning("run %s: cannot rebuild its plan: %s", run_id, exc)
        return None


def _lease(ctx: ReleaseContext) -> VirtualServiceLease:
    api = api_client(ctx.kubeconfig, ctx.kube_context)
    return VirtualServiceLease(api, ctx.plan, ttl=lease_ttl())
