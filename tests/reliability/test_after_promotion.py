"""A rollback after cleanup: the plan says whether stable is recreated or traffic holds."""

from __future__ import annotations

from typing import Any

import pytest

from canary.release import Release
from canary.rollback import RollbackImpossible
from canary.stable_record import STABLE_MANIFEST_ANNOTATION, recorded_stable
from tasks import phases
from tests.reliability.helpers import RoutingSampler, assert_all_on_stable

pytestmark = pytest.mark.usefixtures("prefect_api_url")


def promoted_and_cleaned_up(box: Any, plan: Any) -> Release:
    ctx = Release(plan=plan, release_id="r-late", target=box.target)
    for phase in (phases.isolate, phases.deploy, phases.promote, phases.cleanup):
        phase(ctx)
    assert box.get("deployments", "reviews-v1") is None
    return ctx


def test_recreate_brings_stable_back_from_its_recorded_manifest(start_sandbox, fast_plan):
    box = start_sandbox("healthy")
    plan = fast_plan(rollback={"afterPromotion": "recreate"})
    original = box.get("deployments", "reviews-v1")
    ctx = promoted_and_cleaned_up(box, plan)
    recorded = recorded_stable(box.get("deployments", "reviews-v2"))
    assert recorded is not None and recorded["spec"] == original["spec"]

    with RoutingSampler(box) as sampler:
        done = phases.rollback(ctx, "after cleanup")

    assert done.startswith("all traffic on v1")
    assert_all_on_stable(box, plan)
    assert box.get("deployments", "reviews-v1")["spec"] == original["spec"]
    assert sampler.samples > 10 and sampler.stranded == [], sampler.stranded[:3]


def test_recreate_scales_a_stable_that_cleanup_scaled_to_zero(start_sandbox, fast_plan):
    box = start_sandbox("healthy")
    plan = fast_plan(rollback={"afterPromotion": "recreate"}, cleanup={"action": "scaleToZero"})
    ctx = Release(plan=plan, release_id="r-zero", target=box.target)
    for phase in (phases.isolate, phases.deploy, phases.promote, phases.cleanup):
        phase(ctx)
    assert box.get("deployments", "reviews-v1")["spec"]["replicas"] == 0

    phases.rollback(ctx, "after cleanup")

    assert_all_on_stable(box, plan)
    assert box.get("deployments", "reviews-v1")["spec"]["replicas"] == 1


def test_hold_leaves_traffic_on_the_canary(start_sandbox, fast_plan):
    box = start_sandbox("healthy")
    plan = fast_plan(rollback={"afterPromotion": "hold"})
    ctx = promoted_and_cleaned_up(box, plan)

    with pytest.raises(RollbackImpossible, match="afterPromotion: hold"):
        phases.rollback(ctx, "after cleanup")

    vs = box.get("virtualservices", "reviews")
    assert vs["spec"]["http"][0]["route"] == [{"destination": {"host": "reviews", "subset": "v2"}}]
    assert (
        STABLE_MANIFEST_ANNOTATION
        in box.get("deployments", "reviews-v2")["metadata"]["annotations"]
    )
