"""Where a release resumes: the unfinished release the cluster records for a plan.

A release is (namespace, service, canary version). A run of a plan whose release is
unfinished in the cluster (its lease annotations are still on the route object: the
VirtualService or the HTTPRoute) adopts that release's id, so approvals already given
count, and resumes at the phase the route object says it reached: it never starts again
from isolate, never lowers the canary's weight, never creates a second canary.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from canary.identity import release_key
from canary.lease import annotations_of, lease_of
from canary.plan import ReleasePlan
from canary.planner import PHASE_ANNOTATION, RELEASE_ANNOTATION, ROLLED_BACK_PHASE, phases


@dataclass(frozen=True)
class Unfinished:
    """A release of the plan's identity that the cluster says has not ended."""

    release_id: str
    phase: str | None  # the last phase whose routing it applied; None: none yet


def unfinished(plan: ReleasePlan, route: dict[str, Any] | None) -> Unfinished | None:
    """The unfinished release of the plan's identity the route object records, if any.

    One whose rollback routing was applied has ended as far as traffic goes: a new run of
    the plan is a new release (approvals given to the old one do not carry over).
    """
    held = lease_of(route)
    if held is None or held.identity != release_key(plan):
        return None
    notes = annotations_of(route)
    phase = (
        notes.get(PHASE_ANNOTATION) if notes.get(RELEASE_ANNOTATION) == held.release_id else None
    )
    if phase == ROLLED_BACK_PHASE:
        return None
    known = {p.name for p in phases(plan)}
    return Unfinished(held.release_id, phase if phase in known else None)
