"""One Prefect task per phase of a release, plus rollback.

Every task is idempotent: it reads the cluster, derives the desired state from the
planner (routing) or the manifests module (the canary Deployment), and writes only what
differs; run twice, the second run writes nothing. Routing is read back after writing.
Only transient API errors are retried; failed checks and bad plans are not.
"""

from __future__ import annotations

import functools
import logging
import time
from typing import Any

from prefect import task
from prefect.cache_policies import NONE
from prefect.tasks import exponential_backoff

from canary.checks import base_url, run_checks
from canary.cluster import ReadinessTimeout, is_transient, retrying
from canary.events import EventKind
from canary.manifests import canary_deployment, same_deployment
from canary.planner import (
    Phase,
    Routing,
    canary_weight,
    managed_route_names,
    rollback_routing,
    routing_for,
)
from canary.recorded import record_stable, recorded_stable
from canary.routing import RoutingMismatch
from tasks.context import ReleaseContext, cluster_of, emit, router_of
from tasks.guard import guarded_by
from tasks.health import HealthCheckFailed, hold

ROLLBACK_TIMEOUT = 600.0  # rollback keeps retrying while the API does not answer

log = logging.getLogger(__name__)


class ChecksFailed(Exception):
    """The test phase's checks failed."""


class StableMissing(Exception):
    """The stable Deployment the release starts from is not there."""


class RollbackImpossible(Exception):
    """Traffic cannot go back to stable (its Deployment is gone)."""


def retry_if_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Retry a phase only when it failed on a transient API error."""
    try:
        state.result()
    except Exception as exc:
        return is_transient(exc)
    return False


phase_task = functools.partial(
    task,
    retries=3,
    retry_delay_seconds=exponential_backoff(backoff_factor=1),
    retry_jitter_factor=0.2,
    retry_condition_fn=retry_if_transient,
    cache_policy=NONE,
    persist_result=False,
)


# --- the phases ------------------------------------------------------------------------


@phase_task(name="isolate")
def isolate(ctx: ReleaseContext, phase_name: str = "isolate") -> None:
    """Pin all traffic to stable, with a subset ready for the canary."""
    require_stable(ctx)
    apply_routing(ctx, ctx.phase(phase_name))


@phase_task(name="deploy")
def deploy(ctx: ReleaseContext, phase_name: str = "deploy") -> None:
    """Create the canary Deployment (unless it exists as wanted) and wait until ready."""
    plan = ctx.plan
    apply_routing(ctx, ctx.phase(phase_name))
    cluster = cluster_of(ctx)
    stable = cluster.get_deployment(plan.stable_deployment)
    manifest = canary_deployment(plan, None if plan.canary.manifest else stable, ctx.release_id)
    record_stable(manifest, stable)  # what a rollback after cleanup may recreate
    cluster.apply_deployment(manifest, unchanged=same_deployment)
    cluster.wait_ready(plan.canary_deployment, time.monotonic() + plan.timeouts.readiness)


@phase_task(name="test")
def test(ctx: ReleaseContext, phase_name: str = "test") -> None:
    """Route requests with the run's test header to the canary and run the checks."""
    phase = ctx.phase(phase_name)
    apply_routing(ctx, phase)
    report = run_checks(ctx.plan, ctx.release_id, base_url(ctx.plan, ctx.mesh_url))
    emit(ctx, EventKind.ANALYSIS, phase.name, message=report.reason)
    if not report.passed:
        raise ChecksFailed(report.reason)


@phase_task(name="header-route")
def header_route(ctx: ReleaseContext, phase_name: str = "header-route") -> None:
    """Send the plan's header matches to the canary, then hold."""
    phase = ctx.phase(phase_name)
    apply_routing(ctx, phase)
    watch(ctx, phase)


@phase_task(name="step")
def weighted_step(ctx: ReleaseContext, phase_name: str) -> None:
    """Shift the step's weight to the canary, then hold."""
    phase = ctx.phase(phase_name)
    apply_routing(ctx, phase)
    watch(ctx, phase)


@phase_task(name="promote")
def promote(ctx: ReleaseContext, phase_name: str = "promote") -> None:
    """All traffic to the canary, then hold."""
    phase = ctx.phase(phase_name)
    apply_routing(ctx, phase)
    watch(ctx, phase)


@phase_task(name="cleanup")
def cleanup(ctx: ReleaseContext, phase_name: str = "cleanup") -> None:
    """Drop the stable subset, wait the plan's delay, retire the stable Deployment."""
    plan = ctx.plan
    apply_routing(ctx, ctx.phase(phase_name))
    time.sleep(plan.cleanup.delay)
    cluster = cluster_of(ctx)
    if plan.cleanup.action == "delete":
        cluster.delete_deployment(plan.stable_deployment)
    else:
        cluster.scale_deployment(plan.stable_deployment, 0)


@task(name="rollback", cache_policy=NONE, persist_result=False)
def rollback(ctx: ReleaseContext, reason: str = "") -> str:
    """All traffic to stable, the canary removed, both read back; returns what was done."""
    return land_rollback(ctx)


def land_rollback(ctx: ReleaseContext) -> str:
    """Roll back until it is done: transient API errors and a routing read back different
    (someone wrote meanwhile) are retried, up to ROLLBACK_TIMEOUT. Usable outside a flow
    run (the flow's state hooks call it)."""
    deadline = time.monotonic() + ROLLBACK_TIMEOUT
    while True:
        left = max(deadline - time.monotonic(), 0.0)
        try:
            return retrying(lambda: _roll_back(ctx), what="roll back", timeout=left)
        except RoutingMismatch:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.5)


# --- shared steps --------------------------------------------------------------------


def watch(ctx: ReleaseContext, phase: Phase) -> None:
    """Hold the phase; a canary found unhealthy loses its traffic at once.

    The rollback task that follows does it too, and more (the canary removed, all read
    back); routing first here keeps Prefect's bookkeeping of the failed task, slow on a
    busy worker, out of the time bad traffic flows.
    """
    try:
        hold(ctx, phase)
    except HealthCheckFailed:
        _stop_canary_traffic(ctx)
        raise


def _stop_canary_traffic(ctx: ReleaseContext) -> None:
    guarded = guarded_by(ctx.release_id)
    if guarded is not None and guarded.lost is not None:
        return  # another release owns the routing now
    try:
        if _runs(cluster_of(ctx).get_deployment(ctx.plan.stable_deployment)):
            _route_to_stable(ctx, router_of(ctx).get_routes())
    except Exception as exc:  # the rollback task retries until it lands
        log.warning(
            "%s: routing back to stable failed (%s); rollback retries", ctx.plan.service, exc
        )


def require_stable(ctx: ReleaseContext) -> dict[str, Any]:
    plan = ctx.plan
    stable = cluster_of(ctx).get_deployment(plan.stable_deployment)
    if stable is None:
        raise StableMissing(
            f"stable Deployment {plan.stable_deployment} not found in namespace {plan.namespace}"
        )
    return stable


def apply_routing(ctx: ReleaseContext, phase: Phase) -> Routing:
    """Make the cluster route as the planner says for `phase`, and read it back."""
    router = router_of(ctx)
    current = router.get_routes()
    desired = routing_for(ctx.plan, phase, ctx.release_id, current)
    router.set_routes(desired)
    router.verify(desired)
    before = canary_weight(ctx.plan, current.virtual_service) if current else 0
    after = canary_weight(ctx.plan, desired.virtual_service)
    if after != before:
        emit(ctx, EventKind.WEIGHT_CHANGED, phase.name, canary_weight=after)
    return desired


def _roll_back(ctx: ReleaseContext) -> str:
    plan = ctx.plan
    cluster, router = cluster_of(ctx), router_of(ctx)
    current = router.get_routes()
    if current is not None:
        stable = cluster.get_deployment(plan.stable_deployment)
        if not _runs(stable) and _sends_to_canary(ctx, current):
            stable = _bring_back_stable(ctx, stable)
        if _runs(stable):
            _route_to_stable(ctx, current)
    canary = _retire_canary(ctx)
    _verify_rolled_back(ctx)
    return f"all traffic on {plan.stable.version}; {canary}"


def _route_to_stable(ctx: ReleaseContext, current: Routing | None) -> None:
    router = router_of(ctx)
    desired = rollback_routing(ctx.plan, ctx.release_id, current)
    router.set_routes(desired)
    router.verify(desired)


def _bring_back_stable(ctx: ReleaseContext, stable: dict[str, Any] | None) -> dict[str, Any]:
    """After cleanup: recreate stable as `rollback.afterPromotion` says, and wait until ready.

    Traffic moves back only to a stable that is ready: never to an empty subset.
    """
    plan, cluster = ctx.plan, cluster_of(ctx)
    gone = f"stable Deployment {plan.stable_deployment} is gone or scaled to zero"
    if plan.rollback.after_promotion == "hold":
        raise RollbackImpossible(
            f"{gone}; traffic left on the canary (rollback.afterPromotion: hold)"
        )
    recorded = recorded_stable(cluster.get_deployment(plan.canary_deployment))
    if stable is not None:  # cleanup scaled it to zero
        replicas = (recorded or {}).get("spec", {}).get("replicas") or 1
        cluster.scale_deployment(plan.stable_deployment, replicas)
    elif recorded is None:
        raise RollbackImpossible(
            f"{gone} and no manifest of it was recorded; traffic left on the canary"
        )
    else:
        cluster.apply_deployment(recorded, unchanged=lambda wanted, found: True)
    try:
        return cluster.wait_ready(
            plan.stable_deployment, time.monotonic() + plan.timeouts.readiness
        )
    except ReadinessTimeout as exc:
        raise RollbackImpossible(
            f"recreated stable is not ready ({exc}); traffic left on the canary"
        ) from None


def _retire_canary(ctx: ReleaseContext) -> str:
    plan, cluster = ctx.plan, cluster_of(ctx)
    if plan.rollback.canary_action == "delete":
        deleted = cluster.delete_deployment(plan.canary_deployment)
        return f"{plan.canary_deployment} {'deleted' if deleted else 'not present'}"
    scaled = cluster.scale_deployment(plan.canary_deployment, 0)
    return f"{plan.canary_deployment} {'scaled to zero' if scaled else 'not present'}"


def _verify_rolled_back(ctx: ReleaseContext) -> None:
    plan = ctx.plan
    routing = router_of(ctx).get_routes()
    if routing is not None and _sends_to_canary(ctx, routing):
        raise RollbackImpossible("routing read back after rollback still sends to the canary")
    canary = cluster_of(ctx).get_deployment(plan.canary_deployment)
    if canary is not None and canary.get("spec", {}).get("replicas", 1) != 0:
        raise RollbackImpossible(f"{plan.canary_deployment} still runs after rollback")


def _runs(deployment: dict[str, Any] | None) -> bool:
    """Exists and wants pods (it may still be starting them)."""
    return deployment is not None and deployment.get("spec", {}).get("replicas", 1) > 0


def _sends_to_canary(ctx: ReleaseContext, routing: Routing) -> bool:
    vs = routing.virtual_service
    return bool(vs) and (canary_weight(ctx.plan, vs) > 0 or bool(managed_route_names(vs)))
