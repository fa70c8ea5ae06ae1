"""The canary-release flow end to end on the sandbox: promoted, or rolled back."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from canary.cluster import is_ready
from canary.events import EventKind, ReleaseEvent
from canary.notify import notifying
from canary.planner import canary_weight, managed_route_names
from flows.canary_release import ReleaseResult, ReleaseRolledBack, canary_release

pytestmark = pytest.mark.usefixtures("prefect_api_url")


def subsets(dr: dict[str, Any]) -> list[str]:
    return [s["name"] for s in dr["spec"]["subsets"]]


def release(plan: Any, box: Any, **kwargs: Any) -> ReleaseResult:
    return canary_release(plan, target=box.target, **kwargs)


def assert_all_on_stable(plan: Any, box: Any) -> None:
    vs = box.get("virtualservices", "reviews")
    assert canary_weight(plan, vs) == 0
    assert managed_route_names(vs) == []
    assert [r["route"] for r in vs["spec"]["http"]] == [
        [{"destination": {"host": "reviews", "subset": "v1"}}]
    ]
    assert subsets(box.get("destinationrules", "reviews")) == ["v1"]
    assert box.get("deployments", "reviews-v2") is None
    assert is_ready(box.get("deployments", "reviews-v1"))


def test_healthy_release_is_promoted(start_sandbox, fast_plan):
    box, plan = start_sandbox("healthy"), fast_plan()

    result = release(plan, box, release_id="r-healthy")

    assert result.outcome == "promoted"
    assert [p.name for p in result.phases] == [
        "isolate",
        "deploy",
        "test",
        "header-route",
        "step-1",
        "promote",
        "cleanup",
    ]
    assert all(p.outcome == "completed" and p.finished >= p.started for p in result.phases)
    vs = box.get("virtualservices", "reviews")
    assert canary_weight(plan, vs) == 100
    assert managed_route_names(vs) == []
    assert subsets(box.get("destinationrules", "reviews")) == ["v2"]
    assert box.get("deployments", "reviews-v1") is None
    canary = box.get("deployments", "reviews-v2")
    assert is_ready(canary)
    assert canary["spec"]["template"]["spec"]["containers"][0]["image"] == plan.canary.image


def test_faulty_canary_is_rolled_back_by_the_test_phase(start_sandbox, fast_plan):
    box, plan = start_sandbox("faulty"), fast_plan()

    state = release(plan, box, return_state=True)

    assert state.is_failed()
    assert "test: checks failed" in state.message
    error = state.result(raise_on_failure=False)
    assert isinstance(error, ReleaseRolledBack)
    assert error.result.outcome == "rolled-back"
    assert error.result.failed_phase == "test"
    assert "status 5" in error.result.reason
    assert_all_on_stable(plan, box)


def test_unready_canary_is_rolled_back_at_the_readiness_deadline(start_sandbox, fast_plan):
    box, plan = start_sandbox("unready"), fast_plan(timeouts={"readiness": 2})

    with pytest.raises(ReleaseRolledBack) as raised:
        release(plan, box)

    result = raised.value.result
    assert result.failed_phase == "deploy"
    assert "not ready before the deadline" in result.reason
    deploy = next(p for p in result.phases if p.name == "deploy")
    assert (deploy.finished - deploy.started).total_seconds() >= 2
    assert_all_on_stable(plan, box)


ADMIN_ROUTE = {
    "name": "admin",
    "match": [{"uri": {"prefix": "/admin"}}],
    "route": [{"destination": {"host": "ratings", "port": {"number": 9080}}}],
}


class VirtualServiceSnapshots:
    """A notifier that reads the VirtualService back at the end of every phase."""

    def __init__(self, box: Any):
        self.box = box
        self.by_phase: dict[str, dict[str, Any]] = {}

    def notify(self, event: ReleaseEvent) -> None:
        if event.kind is EventKind.PHASE_FINISHED and event.phase:
            self.by_phase[event.phase] = copy.deepcopy(self.box.get("virtualservices", "reviews"))


def test_user_routes_are_kept_through_the_release(start_sandbox, fast_plan):
    box, plan = start_sandbox("healthy"), fast_plan()
    user_vs = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "reviews", "namespace": "default", "labels": {"team": "books"}},
        "spec": {
            "hosts": ["reviews"],
            "http": [
                ADMIN_ROUTE,
                {"name": "main", "route": [{"destination": {"host": "reviews", "subset": "v1"}}]},
            ],
        },
    }
    user_dr = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "DestinationRule",
        "metadata": {"name": "reviews", "namespace": "default"},
        "spec": {"host": "reviews", "subsets": [{"name": "v1", "labels": {"version": "v1"}}]},
    }
    box.api.create_object("virtualservices", user_vs)
    box.api.create_object("destinationrules", user_dr)
    snapshots = VirtualServiceSnapshots(box)

    with notifying(snapshots):
        result = release(plan, box)

    assert result.outcome == "promoted"
    assert len(snapshots.by_phase) == 7
    for phase, vs in snapshots.by_phase.items():
        user_routes = [r for r in vs["spec"]["http"] if not r["name"].startswith("canary-")]
        assert user_routes[0] == ADMIN_ROUTE, phase
        assert user_routes[1]["name"] == "main", phase
        assert vs["metadata"]["labels"] == {"team": "books"}, phase
    final = box.get("virtualservices", "reviews")["spec"]["http"]
    assert final == [
        ADMIN_ROUTE,
        {"name": "main", "route": [{"destination": {"host": "reviews", "subset": "v2"}}]},
    ]


class PodsDieAtStep:
    """A notifier that scales the canary to zero as soon as step-1 shifts traffic."""

    def __init__(self, box: Any):
        self.box = box

    def notify(self, event: ReleaseEvent) -> None:
        if event.kind is EventKind.WEIGHT_CHANGED and event.phase == "step-1":
            from canary.cluster import Cluster, api_client

            Cluster(api_client(self.box.kubeconfig), "default").scale_deployment("reviews-v2", 0)


def test_an_unhealthy_canary_during_a_hold_is_rolled_back(start_sandbox, fast_plan):
    box = start_sandbox("healthy")
    plan = fast_plan(steps=[{"weight": 20, "hold": "3s"}], analysis={"interval": 1})

    with notifying(PodsDieAtStep(box)), pytest.raises(ReleaseRolledBack) as raised:
        release(plan, box)

    result = raised.value.result
    assert result.failed_phase == "step-1"
    assert "canary-ready: FAILED (reviews-v2: 0/0 replicas ready)" in result.reason
    assert [p.outcome for p in result.phases][-1] == "failed"
    assert_all_on_stable(plan, box)


class WeightAtRollback:
    """A notifier that reads the canary's weight when the rollback task starts."""

    def __init__(self, box: Any, plan: Any):
        self.box, self.plan = box, plan
        self.weights: list[int] = []

    def notify(self, event: ReleaseEvent) -> None:
        if event.kind is EventKind.ROLLBACK and event.message.startswith("rolling back"):
            vs = self.box.get("virtualservices", "reviews")
            self.weights.append(canary_weight(self.plan, vs))


def test_a_canary_failing_its_hold_loses_its_traffic_before_the_rollback_task(
    start_sandbox, fast_plan
):
    box = start_sandbox("healthy")
    plan = fast_plan(steps=[{"weight": 20, "hold": "3s"}], analysis={"interval": 1})
    seen = WeightAtRollback(box, plan)

    with notifying(PodsDieAtStep(box), seen), pytest.raises(ReleaseRolledBack):
        release(plan, box)

    assert seen.weights == [0], "traffic still went to the canary when its rollback began"
    assert_all_on_stable(plan, box)
