"""The canary Deployment, derived from the plan (pure: no cluster access)."""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any

from canary.errors import CanaryError
from canary.identity import release_key
from canary.plan import ReleasePlan
from canary.planner import ANNOTATION_PREFIX, RELEASE_ANNOTATION

SPEC_HASH_ANNOTATION = ANNOTATION_PREFIX + "spec-hash"
# The mark of what a release created: the release's key (namespace/service/canary version).
# A release deletes or scales down only what carries its own mark.
OWNER_ANNOTATION = ANNOTATION_PREFIX + "owner"

# What the API server owns; an object written anew gets its own.
SERVER_METADATA = (
    "uid",
    "resourceVersion",
    "creationTimestamp",
    "generation",
    "managedFields",
    "selfLink",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
)
# Metadata that belongs to the stable object's life, not to a copy of it.
_SERVER_FIELDS = (*SERVER_METADATA, "ownerReferences")
_STALE_ANNOTATIONS = (
    "deployment.kubernetes.io/revision",
    "kubectl.kubernetes.io/last-applied-configuration",
)


class ManifestError(CanaryError):
    """The canary Deployment cannot be made from what is there."""


def canary_deployment(
    plan: ReleasePlan, stable: dict[str, Any] | None, release_id: str
) -> dict[str, Any]:
    """The canary Deployment: the plan's manifest, or the stable one with the new image."""
    if plan.canary.manifest is not None:
        deployment = copy.deepcopy(plan.canary.manifest)
    elif stable is None:
        raise ManifestError(
            f"stable Deployment {plan.stable_deployment} not found in namespace "
            f"{plan.namespace}; it is needed to make the canary from an image"
        )
    else:
        deployment = _clone_with_image(plan, stable)
    metadata = deployment.setdefault("metadata", {})
    metadata["name"] = plan.canary_deployment
    metadata["namespace"] = plan.namespace
    annotations = metadata.setdefault("annotations", {})
    annotations[RELEASE_ANNOTATION] = release_id
    annotations[OWNER_ANNOTATION] = release_key(plan)
    annotations[SPEC_HASH_ANNOTATION] = spec_hash(deployment)
    return deployment


def _clone_with_image(plan: ReleasePlan, stable: dict[str, Any]) -> dict[str, Any]:
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": copy.deepcopy(stable.get("metadata", {})),
        "spec": copy.deepcopy(stable.get("spec", {})),
    }
    metadata = deployment["metadata"]
    for key in _SERVER_FIELDS:
        metadata.pop(key, None)
    for key in _STALE_ANNOTATIONS:
        metadata.get("annotations", {}).pop(key, None)
    _set_version(plan, deployment)
    _container_named(plan, deployment)["image"] = plan.canary.image
    return deployment


def _set_version(plan: ReleasePlan, deployment: dict[str, Any]) -> None:
    """The version label on the object, its selector and its pods."""
    label, version = plan.routing.version_label, plan.canary.version
    spec = deployment["spec"]
    template_metadata = spec.setdefault("template", {}).setdefault("metadata", {})
    for labels in (
        deployment["metadata"].setdefault("labels", {}),
        spec.setdefault("selector", {}).setdefault("matchLabels", {}),
        template_metadata.setdefault("labels", {}),
    ):
        labels[label] = version


def _container_named(plan: ReleasePlan, deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"].get("spec", {}).get("containers") or []
    if not containers:
        raise ManifestError(f"stable Deployment {plan.stable_deployment} has no containers")
    return next((c for c in containers if c.get("name") == plan.service), containers[0])


def owner_of(obj: dict[str, Any] | None) -> str | None:
    """The release key that created `obj`, if a release did."""
    return ((obj or {}).get("metadata") or {}).get("annotations", {}).get(OWNER_ANNOTATION)


def spec_hash(deployment: dict[str, Any]) -> str:
    """A digest of the spec we asked for; the server's defaults do not change it."""
    text = json.dumps(deployment.get("spec", {}), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def same_deployment(desired: dict[str, Any], current: dict[str, Any]) -> bool:
    """Whether `current` was made from `desired` and still runs its replica count."""
    annotations = current.get("metadata", {}).get("annotations") or {}
    wanted_replicas = desired.get("spec", {}).get("replicas", 1)
    return (
        annotations.get(SPEC_HASH_ANNOTATION) == spec_hash(desired)
        and current.get("spec", {}).get("replicas", 1) == wanted_replicas
    )
