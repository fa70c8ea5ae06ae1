"""Releasing another version than the plan's canary: overrides and the release train's plans.

A plan names the canary it was written for. A deployment run may release another version
(`version`, `image` parameters) and the release train releases `schedule.pendingVersion`;
both go through `with_canary`, which checks the result like a plan file.
"""

from __future__ import annotations

from canary.plan.loading import PlanError, Problem, plan_from_dict
from canary.plan.model import ReleasePlan


def with_canary(
    plan: ReleasePlan, version: str | None = None, image: str | None = None, source: str = "<plan>"
) -> ReleasePlan:
    """The plan releasing `version` with `image` instead of its canary; unchanged without them.

    A new version needs its image (unless the canary is a manifest): releasing v3 with the
    image of v2 is refused rather than guessed.
    """
    if version is None and image is None:
        return plan
    canary = plan.canary
    if image is not None and canary.manifest is not None:
        raise _error(source, "canary.image", "the canary is a manifest; put the image in it")
    if image is None and canary.image is not None and version not in (None, canary.version):
        message = f"give the image of {version} (the plan's is the image of {canary.version})"
        raise _error(source, "canary.image", message)
    data = plan.model_dump(by_alias=True, exclude_none=True)
    data["canary"]["version"] = version or canary.version
    if image is not None:
        data["canary"]["image"] = image
    # The train's bookkeeping describes the plan as written, not this release of it.
    data.pop("schedule", None)
    return plan_from_dict(data, source)


def pending_release(plan: ReleasePlan, source: str = "<plan>") -> ReleasePlan | None:
    """The release the train should run for this plan, or None when nothing is pending."""
    schedule = plan.schedule
    if schedule is None or schedule.pending_version == plan.stable.version:
        return None
    return with_canary(plan, schedule.pending_version, schedule.pending_image, source)


def _error(source: str, field: str, message: str) -> PlanError:
    return PlanError([Problem(source, 0, field, message)])
