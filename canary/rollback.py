"""Rolling a release back: all traffic to stable, the canary removed, both read back.

Used by the flow's rollback task, by a hold that finds the canary unhealthy (traffic
leaves it at once), and by the state hooks of a cancelled or crashed run.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from canary.cluster import ReadinessTimeout, retrying
from canary.errors import CanaryError
from canary.identity import release_key
from canary.manifests import owner_of
from canary.planner import RoutingState, rollback_routing
from canary.release import Release, cluster_of, router_of
from canary.routing import RoutingMismatch
from canary.stable_record import recorded_stable

ROLLBACK_TIMEOUT = 600.0  # rollback keeps retrying while the API does not answer

log = logging.getLogger(__name__)


class RollbackImpossible(CanaryError):
    """Traffic cannot go back to stable (its Deployment is gone)."""


def land_rollback(release: Release) -> str:
    """Roll back until it is done; returns what was done.

    Transient API errors and a routing read back different (someone wrote meanwhile) are
    retried, up to ROLLBACK_TIMEOUT. Usable outside a flow run (the state hooks call it).
    """
    deadline = time.monotonic() + ROLLBACK_TIMEOUT
    while True:
        left = max(deadline - time.monotonic(), 0.0)
        try:
            return retrying(lambda: _roll_back(release), what="roll back", timeout=left)
        except RoutingMismatch:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.5)


def stop_canary_traffic(release: Release) -> None:
    """Send all traffic to stable now, if stable runs; never raises (rollback retries)."""
    try:
        if _runs(cluster_of(release).get_deployment(release.plan.stable_deployment)):
            route_to_stable(release, router_of(release).get_routes())
    except Exception as exc:
        log.warning(
            "%s: routing back to stable failed (%s); rollback retries", release.plan.service, exc
        )


def route_to_stable(release: Release, current: RoutingState | None) -> None:
    router = router_of(release)
    desired = rollback_routing(release.plan, release.release_id, current)
    router.set_routes(desired)
    router.verify(desired)


def _roll_back(release: Release) -> str:
    plan = release.plan
    cluster, router = cluster_of(release), router_of(release)
    current = router.get_routes()
    if current is not None:
        stable = cluster.get_deployment(plan.stable_deployment)
        if not _runs(stable) and sends_to_canary(release, current):
            stable = _bring_back_stable(release, stable)
        if _runs(stable):
            route_to_stable(release, current)
    canary = _retire_canary(release)
    _verify_rolled_back(release)
    return f"all traffic on {plan.stable.version}; {canary}"


def _bring_back_stable(release: Release, stable: dict[str, Any] | None) -> dict[str, Any]:
    """After cleanup: recreate stable as `rollback.afterPromotion` says, and wait until ready.

    Traffic moves back only to a stable that is ready: never to an empty subset.
    """
    plan, cluster = release.plan, cluster_of(release)
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


def _retire_canary(release: Release) -> str:
    plan, cluster = release.plan, cluster_of(release)
    canary = cluster.get_deployment(plan.canary_deployment)
    if canary is not None and owner_of(canary) != release_key(plan):
        return f"{plan.canary_deployment} left alone (this release did not create it)"
    if plan.rollback.canary_action == "delete":
        deleted = cluster.delete_deployment(plan.canary_deployment)
        return f"{plan.canary_deployment} {'deleted' if deleted else 'not present'}"
    scaled = cluster.scale_deployment(plan.canary_deployment, 0)
    return f"{plan.canary_deployment} {'scaled to zero' if scaled else 'not present'}"


def _verify_rolled_back(release: Release) -> None:
    plan = release.plan
    routing = router_of(release).get_routes()
    if routing is not None and sends_to_canary(release, routing):
        raise RollbackImpossible("routing read back after rollback still sends to the canary")
    canary = cluster_of(release).get_deployment(plan.canary_deployment)
    ours = owner_of(canary) == release_key(plan)
    if ours and canary.get("spec", {}).get("replicas", 1) != 0:
        raise RollbackImpossible(f"{plan.canary_deployment} still runs after rollback")


def _runs(deployment: dict[str, Any] | None) -> bool:
    """Exists and wants pods (it may still be starting them)."""
    return deployment is not None and deployment.get("spec", {}).get("replicas", 1) > 0


def sends_to_canary(release: Release, routing: RoutingState) -> bool:
    return bool(routing.route) and (
        routing.canary_weight(release.plan) > 0 or bool(routing.managed_route_names())
    )
