"""Which release this is: the one model events, results, reports and gates all carry."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from canary.plan import ReleasePlan


class ReleaseIdentity(BaseModel):
    """A release of one service from its stable version to a canary version."""

    model_config = ConfigDict(frozen=True)

    release_id: str
    namespace: str
    service: str
    stable_version: str
    canary_version: str

    @classmethod
    def of(cls, plan: ReleasePlan, release_id: str) -> ReleaseIdentity:
        return cls(
            release_id=release_id,
            namespace=plan.namespace,
            service=plan.service,
            stable_version=plan.stable.version,
            canary_version=plan.canary.version,
        )

    @property
    def versions(self) -> str:
        """`reviews v1->v2`: how lines and titles name the release."""
        return f"{self.service} {self.stable_version}->{self.canary_version}"


def release_key(plan: ReleasePlan, version: str | None = None) -> str:
    """What makes runs one release: where, which service, which canary version.

    A run of a plan with the key of an unfinished release resumes it (canary.resume), and
    what a release creates carries its key as its owner's mark (canary.manifests): the
    release of `version` made the Deployment that serves it.
    """
    return f"{plan.namespace}/{plan.service}/{version or plan.canary.version}"
