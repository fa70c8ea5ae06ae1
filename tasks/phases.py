"""One Prefect task per phase of a release, plus rollback.

Every task is idempotent: it reads the cluster, derives the desired state from the
planner (routing) or the manifests module (the canary Deployment), and writes only what
differs; run twice, the second run writes nothing. Routing is read back after writing.
Only transient API errors are retried; failed checks and bad plans are not.
"""

from __future__ import annotations

import functools
import time
from typing import Any

from prefect import task
from prefect.cache_policies import NONE
from prefect.tasks import exponential_backoff

from canary.checks import base_url, run_checks
from canary.cluster import is_transient
from canary.errors import CanaryError
from canary.events import EventKind
from canary.hold import hold
from canary.identity import release_key
from canary.manifests import canary_deployment, owner_of, same_deployment
from canary.notify.console import run_logger
from canary.ownership import guarded_by
from canary.planner import Phase, RoutingState, routing_for
from canary.release import Release, cluster_of, emit, router_of
from canary.rollback import land_rollback, stop_canary_traffic
from canary.round_checks import HealthCheckFailed
from canary.stable_record import record_stable


class ChecksFailed(CanaryError):
    """The test phase's checks failed."""


class StableMissing(CanaryError):
    """The stable Deployment the release starts from is not there."""


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
def isolate(release: Release, phase_name: str = "isolate") -> None:
    """Pin all traffic to stable, with a destination (subset, Service) ready for the canary."""
    require_stable(release)
    apply_routing(release, release.phase(phase_name))


@phase_task(name="deploy")
def deploy(release: Release, phase_name: str = "deploy") -> None:
    """Create the canary Deployment (unless it exists as wanted) and wait until ready."""
    plan = release.plan
    apply_routing(release, release.phase(phase_name))
    cluster = cluster_of(release)
    stable = cluster.get_deployment(plan.stable_deployment)
    source = None if plan.canary.manifest else stable
    manifest = canary_deployment(plan, source, release.release_id)
    record_stable(manifest, stable)  # what a rollback after cleanup may recreate
    cluster.apply_deployment(manifest, unchanged=same_deployment)
    cluster.wait_ready(plan.canary_deployment, time.monotonic() + plan.timeouts.readiness)


@phase_task(name="test")
def test(release: Release, phase_name: str = "test") -> None:
    """Route requests with the run's test header to the canary and run the checks."""
    phase = release.phase(phase_name)
    apply_routing(release, phase)
    url = base_url(release.plan, release.target.mesh_url)
    report = run_checks(release.plan, release.release_id, url)
    decision = "pass" if report.passed else "fail"
    emit(release, EventKind.ANALYSIS, phase.name, decision=decision, message=report.reason)
    if not report.passed:
        raise ChecksFailed(report.reason)


@phase_task(name="header-route")
def header_route(release: Release, phase_name: str = "header-route") -> None:
    """Send the plan's header matches to the canary, then hold."""
    phase = release.phase(phase_name)
    apply_routing(release, phase)
    watch(release, phase)


@phase_task(name="step")
def weighted_step(release: Release, phase_name: str) -> None:
    """Shift the step's weight to the canary, then hold."""
    phase = release.phase(phase_name)
    apply_routing(release, phase)
    watch(release, phase)


@phase_task(name="promote")
def promote(release: Release, phase_name: str = "promote") -> None:
    """All traffic to the canary, then hold."""
    phase = release.phase(phase_name)
    apply_routing(release, phase)
    watch(release, phase)


@phase_task(name="cleanup")
def cleanup(release: Release, phase_name: str = "cleanup") -> None:
    """Drop stable's destination, wait the plan's delay, retire the stable Deployment."""
    plan = release.plan
    apply_routing(release, release.phase(phase_name))
    time.sleep(plan.cleanup.delay)
    cluster = cluster_of(release)
    stable = cluster.get_deployment(plan.stable_deployment)
    owner = owner_of(stable)
    if owner is not None and owner != release_key(plan, plan.stable.version):
        # Made by another release as its canary: not the stable this release started from.
        run_logger().warning("%s left in place: it is %s's", plan.stable_deployment, owner)
    elif plan.cleanup.action == "delete":
        cluster.delete_deployment(plan.stable_deployment)
    else:
        cluster.scale_deployment(plan.stable_deployment, 0)


@task(name="rollback", cache_policy=NONE, persist_result=False)
def rollback(release: Release, reason: str = "") -> str:
    """All traffic to stable, the canary removed, both read back; returns what was done."""
    return land_rollback(release)


# --- shared steps --------------------------------------------------------------------


def watch(release: Release, phase: Phase) -> None:
    """Hold the phase; a canary found unhealthy loses its traffic at once.

    The rollback task that follows does it too, and more (the canary removed, all read
    back); routing first here keeps Prefect's bookkeeping of the failed task, slow on a
    busy worker, out of the time bad traffic flows.
    """
    try:
        hold(release, phase)
    except HealthCheckFailed:
        guarded = guarded_by(release.release_id)
        if guarded is None or guarded.lost is None:  # else another release owns the routing
            stop_canary_traffic(release)
        raise


def require_stable(release: Release) -> dict[str, Any]:
    plan = release.plan
    stable = cluster_of(release).get_deployment(plan.stable_deployment)
    if stable is None:
        raise StableMissing(
            f"stable Deployment {plan.stable_deployment} not found in namespace {plan.namespace}"
        )
    return stable


def apply_routing(release: Release, phase: Phase) -> RoutingState:
    """Make the cluster route as the planner says for `phase`, and read it back."""
    router = router_of(release)
    current = router.get_routes()
    desired = routing_for(release.plan, phase, release.release_id, current)
    router.set_routes(desired)
    router.verify(desired)
    before = current.canary_weight(release.plan) if current else 0
    after = desired.canary_weight(release.plan)
    if after != before:
        emit(release, EventKind.WEIGHT_CHANGED, phase.name, canary_weight=after)
    return desired
