"""Phases are idempotent: a phase run again after it completed writes nothing."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from canary.cluster import Cluster, api_client
from canary.release import Release
from canary.rollback import RollbackImpossible
from tasks import phases

pytestmark = pytest.mark.usefixtures("prefect_api_url")

WATCHED = [
    ("virtualservices", "reviews"),
    ("destinationrules", "reviews"),
    ("deployments", "reviews-v1"),
    ("deployments", "reviews-v2"),
]


def snapshot(box: Any) -> dict[tuple[str, str], Any]:
    return {key: box.get(*key) for key in WATCHED}


def assert_rerun_writes_nothing(box: Any, name: str, run: Callable[[], None]) -> None:
    run()
    before = snapshot(box)
    box.api.clear_requests()
    run()
    writes = [(w.method, w.path) for w in box.writes()]
    assert writes == [], f"{name} wrote again: {writes}"
    after = snapshot(box)
    for key, obj in before.items():
        version = (obj or {}).get("metadata", {}).get("resourceVersion")
        again = (after[key] or {}).get("metadata", {}).get("resourceVersion")
        assert again == version, f"{name} changed {key}"
    assert after == before, name


def context(box: Any, plan: Any, release_id: str) -> Release:
    return Release(
        plan=plan,
        release_id=release_id,
        target=box.target,
    )


def test_each_phase_run_twice_writes_nothing_the_second_time(start_sandbox, fast_plan):
    box = start_sandbox("healthy")
    ctx = context(box, fast_plan(), "r-rerun")
    steps: list[tuple[str, Callable[[], None]]] = [
        ("isolate", lambda: phases.isolate(ctx)),
        ("deploy", lambda: phases.deploy(ctx)),
        ("test", lambda: phases.test(ctx)),
        ("header-route", lambda: phases.header_route(ctx)),
        ("step-1", lambda: phases.weighted_step(ctx, "step-1")),
        ("promote", lambda: phases.promote(ctx)),
        ("cleanup", lambda: phases.cleanup(ctx)),
    ]
    for name, run in steps:
        assert_rerun_writes_nothing(box, name, run)
    assert box.get("deployments", "reviews-v1") is None


def test_rollback_run_twice_writes_nothing_the_second_time(start_sandbox, fast_plan):
    box = start_sandbox("healthy")
    ctx = context(box, fast_plan(), "r-rollback")
    phases.isolate(ctx)
    phases.deploy(ctx)
    phases.weighted_step(ctx, "step-1")

    assert_rerun_writes_nothing(box, "rollback", lambda: phases.rollback(ctx, "test"))
    assert box.get("deployments", "reviews-v2") is None


def test_a_canary_left_by_another_release_is_replaced_not_duplicated(start_sandbox, fast_plan):
    box = start_sandbox("healthy")
    old = context(box, fast_plan(canary={"version": "v2", "image": "reviews:old"}), "r-old")
    phases.isolate(old)
    phases.deploy(old)
    ctx = context(box, fast_plan(), "r-new")

    phases.deploy(ctx)

    canary = box.get("deployments", "reviews-v2")
    assert canary["spec"]["template"]["spec"]["containers"][0]["image"] == ctx.plan.canary.image
    assert canary["metadata"]["annotations"]["canary.release/release-id"] == "r-new"


def test_rollback_never_sends_traffic_to_a_stable_that_is_gone(start_sandbox, fast_plan):
    box = start_sandbox("healthy")
    ctx = context(box, fast_plan(), "r-late")
    phases.isolate(ctx)
    phases.deploy(ctx)
    phases.promote(ctx)
    Cluster(api_client(box.kubeconfig), "default").delete_deployment("reviews-v1")

    with pytest.raises(RollbackImpossible, match="reviews-v1 is gone"):
        phases.rollback(ctx, "cleanup failed")

    vs = box.get("virtualservices", "reviews")
    assert vs["spec"]["http"][0]["route"] == [{"destination": {"host": "reviews", "subset": "v2"}}]
    assert box.get("deployments", "reviews-v2") is not None
