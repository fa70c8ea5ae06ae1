"""Gates inside the release flow: paused before the phase, resumed as the Prefect UI does."""

from __future__ import annotations

from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState
from prefect.client.schemas.filters import FlowRunFilterStateType as StateTypeFilter
from prefect.client.schemas.objects import StateType
from prefect.flow_runs import resume_flow_run

from canary.planner import canary_weight
from flows.canary_release import ReleaseRolledBack
from tests.support.releases import release_outcome, start_in_thread
from tests.support.waiting import wait_until

pytestmark = pytest.mark.usefixtures("prefect_api_url")
APPROVER = "U0JASON"
GATE = {"before": "step-1", "approvers": {"users": [APPROVER]}, "timeout": "60s"}


class BackgroundRelease:
    """canary_release in a thread, so the test can answer its gate."""

    def __init__(self, plan: Any, box: Any, release_id: str):
        self.plan, self.box, self.release_id = plan, box, release_id
        self.outcome: Any = None
        self.thread = start_in_thread(self._run)

    def _run(self) -> None:
        self.outcome = release_outcome(self.plan, self.box, self.release_id)

    def paused_run_id(self) -> str:
        def find() -> str | None:
            paused = StateTypeFilter(any_=[StateType.PAUSED])
            with get_client(sync_client=True) as client:
                runs = client.read_flow_runs(
                    flow_run_filter=FlowRunFilter(state=FlowRunFilterState(type=paused))
                )
            return next(
                (str(r.id) for r in runs if r.parameters.get("release_id") == self.release_id),
                None,
            )

        return wait_until(find, 60, interval=0.2, message="the release to pause at its gate")

    def finish(self) -> Any:
        self.thread.join(60)
        assert not self.thread.is_alive(), "the release did not finish"
        return self.outcome


def test_release_pauses_before_the_step_and_an_approval_resumes_it(start_sandbox, fast_plan):
    box, plan = start_sandbox("healthy"), fast_plan(gates=[GATE])
    release = BackgroundRelease(plan, box, "r-gate-approve")

    run_id = release.paused_run_id()
    # Paused after the header route: nothing has moved to weighted traffic yet.
    assert canary_weight(plan, box.get("virtualservices", "reviews")) == 0
    resume_flow_run(
        run_id, run_input={"decision": "approve", "reason": "page ok", "approver": APPROVER}
    )

    result = release.finish()
    assert result.outcome == "promoted", result
    assert canary_weight(plan, box.get("virtualservices", "reviews")) == 100


def test_a_rejection_at_the_gate_rolls_back_with_who_and_why(start_sandbox, fast_plan):
    box, plan = start_sandbox("healthy"), fast_plan(gates=[GATE])
    release = BackgroundRelease(plan, box, "r-gate-reject")

    resume_flow_run(
        release.paused_run_id(),
        run_input={"decision": "reject", "reason": "ratings look wrong", "approver": APPROVER},
    )

    outcome = release.finish()
    assert isinstance(outcome, ReleaseRolledBack)
    assert "ratings look wrong" in outcome.result.reason and APPROVER in outcome.result.reason
    assert canary_weight(plan, box.get("virtualservices", "reviews")) == 0
    assert box.get("deployments", "reviews-v2") is None
