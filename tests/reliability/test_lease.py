"""One release per service at a time: the lease on the VirtualService."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from canary.cli import main
from canary.cluster import api_client
from canary.lease import (
    IDENTITY,
    LEASE,
    LEASE_EXPIRES,
    LEASE_HOLDER,
    RouteLease,
    annotations_of,
    rfc3339,
)
from canary.plan import plan_from_dict
from canary.planner import canary_weight, phase_named, routing_for, same_routing
from canary.routing.custom_objects import replacement as _replacement
from tests.reliability.helpers import BackgroundRelease, write_plan
from tests.support.waiting import wait_until

pytestmark = pytest.mark.usefixtures("prefect_api_url")

LONG_STEP = {"steps": [{"weight": 20, "hold": "8s"}], "analysis": {"interval": 1}}


def refused_run(plan: Path, box: Any, capsys: Any) -> tuple[int, str]:
    code = main(["run", str(plan), "--kubeconfig", box.kubeconfig])
    return code, capsys.readouterr().err.strip()


def cluster_writes_besides_the_lease(box: Any) -> list[tuple[str, str]]:
    return [(w.method, w.path) for w in box.writes() if "/virtualservices/" not in w.path]


def test_a_second_release_of_the_service_is_refused_naming_the_holder(
    start_sandbox, fast_plan, plan_data, tmp_path, capsys, monkeypatch
):
    monkeypatch.setenv("CANARY_LEASE_TTL", "3")  # renewed every second: seen quickly
    box = start_sandbox("healthy")
    first = BackgroundRelease(fast_plan(**LONG_STEP), box)
    holder = first.wait_for_phase("step-1")
    vs_before = box.get("virtualservices", "reviews")
    box.api.clear_requests()

    other_version = plan_data(**LONG_STEP, canary={"version": "v3", "image": "reviews:v3"})
    code, err = refused_run(write_plan(tmp_path / "v3.yaml", other_version), box, capsys)
    assert code == 2, err
    assert len(err.splitlines()) == 1, err
    assert "default/reviews is being released by release " in err and "[default/reviews/v2]" in err

    same_plan = write_plan(tmp_path / "v2.yaml", plan_data(**LONG_STEP))
    code, err = refused_run(same_plan, box, capsys)
    assert code == 2, err
    assert f"still running in another worker ({holder})" in err, err

    assert cluster_writes_besides_the_lease(box) == []
    vs_after = box.get("virtualservices", "reviews")
    assert vs_after["spec"] == vs_before["spec"]
    assert annotations_of(vs_after)[LEASE_HOLDER] == holder
    assert box.get("deployments", "reviews-v3") is None
    first_state = first.finish()
    assert first_state.is_completed(), first_state


def test_releases_of_different_services_run_at_the_same_time(start_sandbox, fast_plan):
    box = start_sandbox("healthy")
    reviews = fast_plan(steps=[{"weight": 20, "hold": "4s"}], analysis={"interval": 1})
    ratings = fast_plan(
        service="ratings",
        canary={"version": "v2", "image": "docker.io/istio/examples-bookinfo-ratings-v2:1.20.0"},
        tests={"port": 9080},
        steps=[{"weight": 20, "hold": "4s"}],
        analysis={"interval": 1},
    )
    releases = [BackgroundRelease(reviews, box), BackgroundRelease(ratings, box)]

    def both_hold_a_lease() -> bool:
        return all(
            LEASE in annotations_of(box.get("virtualservices", s)) for s in ("reviews", "ratings")
        )

    wait_until(both_hold_a_lease, 60, interval=0.02, message="both releases to run at once")
    for release, plan in zip(releases, (reviews, ratings), strict=True):
        assert release.finish().is_completed()
        assert canary_weight(plan, box.get("virtualservices", plan.service)) == 100


def test_an_expired_lease_may_be_taken(start_sandbox, fast_plan):
    box, plan = start_sandbox("healthy"), fast_plan()
    long_ago = datetime.now(UTC) - timedelta(minutes=5)
    box.api.create_object("virtualservices", leased_vs("r-crashed", "default/reviews/v9", long_ago))

    state = BackgroundRelease(plan, box).finish()

    assert state.is_completed(), state
    notes = annotations_of(box.get("virtualservices", "reviews"))
    assert LEASE not in notes and notes[IDENTITY] == "default/reviews/v2"


def leased_vs(release_id: str, identity: str, expires: datetime) -> dict[str, Any]:
    notes = {
        LEASE: release_id,
        LEASE_HOLDER: "some-worker",
        LEASE_EXPIRES: rfc3339(expires),
        IDENTITY: identity,
    }
    route = [{"destination": {"host": "reviews", "subset": "v1"}}]
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "reviews", "namespace": "default", "annotations": notes},
        "spec": {"hosts": ["reviews"], "http": [{"route": route}]},
    }


def test_the_lease_does_not_count_as_a_routing_difference(fast_plan):
    plan = fast_plan()
    desired = routing_for(plan, phase_named(plan, "step-1"), "r1").virtual_service
    in_cluster = copy.deepcopy(desired)
    in_cluster["metadata"]["annotations"] |= {LEASE: "r1", LEASE_EXPIRES: "2099-01-01T00:00:00Z"}
    in_cluster["metadata"]["resourceVersion"] = "7"
    assert same_routing(desired, in_cluster)

    written = _replacement(in_cluster, desired)
    assert written["metadata"]["annotations"][LEASE_EXPIRES] == "2099-01-01T00:00:00Z"
    assert written["metadata"]["resourceVersion"] == "7"
    moved = copy.deepcopy(in_cluster)
    moved["metadata"]["annotations"]["canary.release/phase"] = "step-2"
    assert not same_routing(desired, moved)


def test_a_release_that_lost_its_lease_leaves_the_traffic_alone(
    start_sandbox, fast_plan, monkeypatch
):
    monkeypatch.setenv("CANARY_LEASE_TTL", "1")  # renewed every third of a second
    box = start_sandbox("healthy")
    release = BackgroundRelease(fast_plan(**LONG_STEP), box)
    release.wait_for_phase("step-1")
    thief = datetime.now(UTC) + timedelta(minutes=5)

    def steal(vs: dict[str, Any]) -> dict[str, Any]:
        vs["metadata"]["annotations"] |= leased_vs("r-other", "default/reviews/v3", thief)[
            "metadata"
        ]["annotations"]
        return vs

    box.store.update("virtualservices", "default", "reviews", steal)
    state = release.finish()

    assert state.is_failed()
    result = state.result(raise_on_failure=False).result
    assert result.outcome == "failed" and "now held by release r-other" in result.reason
    vs = box.get("virtualservices", "reviews")
    assert canary_weight(release.plan, vs) == 20  # the other release's to move, not ours
    assert annotations_of(vs)[LEASE] == "r-other"


def test_a_wait_for_a_stopped_runs_lease_says_whose_and_how_long(start_sandbox, plan_data):
    box = start_sandbox("healthy")
    soon = datetime.now(UTC) + timedelta(seconds=2)
    box.api.create_object("virtualservices", leased_vs("r-stopped", "default/reviews/v2", soon))
    told: list[str] = []

    RouteLease(api_client(box.kubeconfig), plan_from_dict(plan_data()), ttl=30).acquire(
        "r-next", "worker-b", on_wait=told.append
    )

    assert len(told) == 1, told
    assert "release r-stopped" in told[0] and "(some-worker)" in told[0], told
    assert "waiting up to" in told[0] and "unless its holder renews it" in told[0], told
    assert annotations_of(box.get("virtualservices", "reviews"))[LEASE] == "r-next"
