"""What the planner writes on every routing object: its metadata and the annotations that
record the release and phase, and how a written object is compared with what was read."""

from __future__ import annotations

import copy
from typing import Any

from canary.plan import ReleasePlan

ANNOTATION_PREFIX = "canary.release/"
RELEASE_ANNOTATION = ANNOTATION_PREFIX + "release-id"
PHASE_ANNOTATION = ANNOTATION_PREFIX + "phase"
ROLLED_BACK_PHASE = "rolled-back"  # the phase annotation of rollback routing
PLANNER_ANNOTATIONS = (RELEASE_ANNOTATION, PHASE_ANNOTATION)


def metadata(plan: ReleasePlan, name: str, current: dict[str, Any] | None) -> dict[str, Any]:
    """The object's metadata: its name, and the labels and annotations it has now."""
    meta: dict[str, Any] = {"name": name, "namespace": plan.namespace}
    old = (current or {}).get("metadata", {})
    for key in ("labels", "annotations"):
        if old.get(key):
            meta[key] = copy.deepcopy(old[key])
    return meta


def annotate(obj: dict[str, Any], release_id: str, phase_name: str) -> None:
    annotations = obj["metadata"].setdefault("annotations", {})
    annotations[RELEASE_ANNOTATION] = release_id
    annotations[PHASE_ANNOTATION] = phase_name


def same_routing(desired: dict[str, Any], actual: dict[str, Any]) -> bool:
    """Whether the cluster holds what the planner said (spec and the planner's annotations).

    Other annotations (the release lease, users' own) may change meanwhile; they are not
    the planner's to compare.
    """
    if desired.get("spec") != actual.get("spec"):
        return False
    want = desired["metadata"].get("annotations", {})
    have = actual.get("metadata", {}).get("annotations") or {}
    return all(have.get(k) == want[k] for k in PLANNER_ANNOTATIONS if k in want)
