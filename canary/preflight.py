"""What is checked in the cluster before a release writes anything.

A plan can be valid and still point at the wrong objects: a canary Deployment name that
is the stable's, or another service's; a version label the Service selects on (its
subsets would hold no endpoints). Such a release is refused (BadInput, exit 2) before
its first write, the lease included, naming the plan's field. An API server that cannot
be reached is refused the same way: nothing was changed.
"""

from __future__ import annotations

from typing import Any

from canary.cluster import Cluster, ClusterUnreachable, is_unreachable
from canary.errors import BadInput, describe
from canary.identity import release_key
from canary.manifests import owner_of
from canary.plan import ReleasePlan
from canary.release import Release

RETRY_S = 10.0  # how long an API server that does not answer is tried before refusing


class PlanConflictsWithCluster(BadInput):
    """The plan names objects of the cluster it must not touch."""


def check_before_writing(release: Release) -> None:
    """Refuse a release whose plan would change what it does not own; reads only."""
    plan = release.plan
    try:
        cluster = Cluster(release.target.api_client(), plan.namespace, retry_timeout=RETRY_S)
        service = cluster.get_service(plan.service)
        _check_canary_name(plan, cluster.get_deployment(plan.canary_deployment))
        _check_version_label(plan, service)
        _check_stable(plan, cluster.get_deployment(plan.stable_deployment), service)
    except BadInput:
        raise
    except Exception as exc:
        if is_unreachable(exc):
            raise ClusterUnreachable(describe(exc)) from None
        raise


def _check_canary_name(plan: ReleasePlan, existing: dict[str, Any] | None) -> None:
    name = plan.canary_deployment
    if name == plan.stable_deployment:
        raise PlanConflictsWithCluster(
            f"canary.deployment: {name} is the stable Deployment; the canary needs its own"
        )
    if existing is None:
        return
    owner = owner_of(existing)
    if owner != release_key(plan):
        made_by = f"by the release {owner}" if owner else "by someone else"
        raise PlanConflictsWithCluster(
            f"canary.deployment: Deployment {name} exists in {plan.namespace} and was made "
            f"{made_by}, not by this release; name another canary, or remove it first"
        )


def _check_stable(
    plan: ReleasePlan, stable: dict[str, Any] | None, service: dict[str, Any] | None
) -> None:
    """The stable Deployment is the service's, at the stable version (cleanup retires it)."""
    if stable is None:  # a fresh release stops at isolate; a resumed one may be past cleanup
        return
    labels = (((stable.get("spec") or {}).get("template") or {}).get("metadata") or {}).get(
        "labels"
    ) or {}
    name, label = plan.stable_deployment, plan.routing.version_label
    selector = ((service or {}).get("spec") or {}).get("selector") or {}
    if any(labels.get(k) != v for k, v in selector.items()):
        raise PlanConflictsWithCluster(
            f"stable.deployment: the pods of {name} are not the Service {plan.service}'s "
            f"(it selects {_labels(selector)}; they are {_labels(labels)})"
        )
    if labels.get(label) != plan.stable.version:
        raise PlanConflictsWithCluster(
            f"stable.deployment: the pods of {name} are not labelled "
            f"{label}={plan.stable.version} (they are {_labels(labels)})"
        )


def _labels(labels: dict[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(labels.items())) or "unlabelled"


def _check_version_label(plan: ReleasePlan, service: dict[str, Any] | None) -> None:
    label = plan.routing.version_label
    selector = ((service or {}).get("spec") or {}).get("selector") or {}
    if label in selector:
        raise PlanConflictsWithCluster(
            f"routing.versionLabel: the Service {plan.service} selects on {label!r} "
            f"({label}={selector[label]}), so it cannot tell versions apart by it"
        )
