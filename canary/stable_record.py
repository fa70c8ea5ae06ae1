"""The stable Deployment as it was when the release began, kept on the canary Deployment.

After cleanup the stable Deployment is gone; a rollback that must bring it back
(`rollback.afterPromotion: recreate`) recreates it from this record. It lives in one
annotation of the canary Deployment (gzip + base64 JSON), so the release needs no access
to ConfigMaps, and it is deleted with the canary.
"""

from __future__ import annotations

import base64
import copy
import gzip
import json
from typing import Any

from canary.manifests import SERVER_METADATA
from canary.planner import ANNOTATION_PREFIX

STABLE_MANIFEST_ANNOTATION = ANNOTATION_PREFIX + "stable-manifest"

_SERVER_ANNOTATIONS = (
    "deployment.kubernetes.io/revision",
    "kubectl.kubernetes.io/last-applied-configuration",
)


def stable_manifest(stable: dict[str, Any]) -> dict[str, Any]:
    """The stable Deployment without status and server-owned metadata."""
    metadata = copy.deepcopy(stable.get("metadata", {}))
    for key in SERVER_METADATA:
        metadata.pop(key, None)
    for key in _SERVER_ANNOTATIONS:
        metadata.get("annotations", {}).pop(key, None)
    return {
        "apiVersion": stable.get("apiVersion", "apps/v1"),
        "kind": "Deployment",
        "metadata": metadata,
        "spec": copy.deepcopy(stable.get("spec", {})),
    }


def record_stable(canary: dict[str, Any], stable: dict[str, Any] | None) -> None:
    """Put the stable manifest in an annotation of the canary manifest (in place)."""
    if stable is None:
        return
    text = json.dumps(stable_manifest(stable), sort_keys=True, separators=(",", ":"))
    packed = base64.b64encode(gzip.compress(text.encode(), mtime=0)).decode()
    canary.setdefault("metadata", {}).setdefault("annotations", {})[STABLE_MANIFEST_ANNOTATION] = (
        packed
    )


def recorded_stable(canary: dict[str, Any] | None) -> dict[str, Any] | None:
    """The stable manifest recorded on the canary Deployment; None when there is none."""
    notes = ((canary or {}).get("metadata") or {}).get("annotations") or {}
    packed = notes.get(STABLE_MANIFEST_ANNOTATION)
    if not packed:
        return None
    try:
        return json.loads(gzip.decompress(base64.b64decode(packed)))
    except (ValueError, OSError):  # damaged by hand: as if nothing was recorded
        return None
