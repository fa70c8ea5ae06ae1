"""The flow's state hooks: roll back a release whose run was cancelled or crashed.

When a run is cancelled from the Prefect UI its worker terminates the flow process, and
when a run crashes (a termination signal, an error the engine cannot hand to the flow) the
flow's own code does not get to roll back. Prefect then calls `roll_back_stopped_run`, in
the flow's process, or in the runner supervising it: it rolls back, unless this run never
held the service (a refused run changed nothing, and must not undo another's release).
Once the run's guard has let go (or in the runner) the release is rebuilt from the run's
parameters, as the run built it: a plan file, `version` and `image` overrides included.
Its events go where the release's own go (canary.wiring): the run log, Slack, metrics.
"""

from __future__ import annotations

import logging
from typing import Any

from canary.events import EventKind
from canary.identity import release_key
from canary.lease import RouteLease, lease_of
from canary.ownership import guarded_by, lease_ttl
from canary.plan import ReleasePlan, plan_from_dict
from canary.plan.configs import plan_to_release
from canary.release import Release, ReleaseTarget, emit
from canary.rollback import land_rollback
from canary.wiring import reporting_release

log = logging.getLogger(__name__)


def roll_back_stopped_run(flow: Any, flow_run: Any, state: Any) -> None:
    """on_cancellation / on_crashed: all traffic back to stable, then give the lease back."""
    run_id = str(flow_run.id)
    guarded = guarded_by(run_id)
    release = guarded.release if guarded is not None else release_from_parameters(flow_run)
    if release is None:
        log.warning("run %s: cannot tell which release to roll back", run_id)
        return
    lease = guarded.lease if guarded is not None else _lease(release)
    held = lease_of(lease.read())
    if held is None or held.holder != run_id:
        log.info("run %s does not hold %s: nothing to roll back", run_id, release.plan.service)
        return
    if held.identity != release_key(release.plan):  # e.g. its plan file was edited since
        wrong = release_key(release.plan)
        log.warning("run %s holds %s, not %s: not rolled back", run_id, held.identity, wrong)
        return
    release = release.model_copy(update={"release_id": held.release_id})
    reason = f"run {str(state.name).lower()}" + (f": {state.message}" if state.message else "")
    with reporting_release(release):
        outcome = _roll_back(release, reason)
    lease.release(held.release_id, held.holder, outcome)


def _roll_back(release: Release, reason: str) -> str:
    emit(release, EventKind.ROLLBACK, message=f"rolling back: {reason}")
    try:
        done = land_rollback(release)
    except Exception as exc:  # a hook must not raise; say it loudly instead
        emit(release, EventKind.FAILED, message=f"{reason}; rollback failed: {exc}")
        return "failed"
    emit(release, EventKind.ROLLBACK, canary_weight=0, message=f"done: {done}")
    return "rolled-back"


def release_from_parameters(flow_run: Any) -> Release | None:
    """The release from a canary-release run's parameters (a runner's hook).

    Two flows are named canary-release: `canary_release` (an inline plan, a `target`) and
    the deployment's `release` (a plan file, `version`/`image` overrides, the target's
    fields one by one). The plan is rebuilt as the run built it: another plan would name
    another release.
    """
    params = dict(getattr(flow_run, "parameters", None) or {})
    plan = _plan_of(params, str(flow_run.id))
    if plan is None:
        return None
    return Release(
        plan=plan,
        release_id=str(flow_run.id),
        target=_target_of(params),
        initiator=params.get("initiator"),
    )


def _target_of(params: dict[str, Any]) -> ReleaseTarget:
    target = params.get("target")
    if isinstance(target, ReleaseTarget):
        return target
    if isinstance(target, dict):
        return ReleaseTarget.model_validate(target)
    return ReleaseTarget(
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


def _lease(release: Release) -> RouteLease:
    return RouteLease(release.target.api_client(), release.plan, ttl=lease_ttl())
