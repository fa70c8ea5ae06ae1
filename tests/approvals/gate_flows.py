"""A small flow with a gate between two steps, run in a thread of the test process."""

from __future__ import annotations

import contextvars
import threading
import time
import uuid
from typing import Any

from prefect import flow
from prefect.client.orchestration import get_client
from prefect.runtime import flow_run
from prefect.states import Failed, State

from canary.approvals.pause import await_gate
from canary.approvals.spec import Gate
from canary.approvals.store import GateOutcome, recorded_decision
from canary.events import EventKind
from canary.notify import Notifier, notifying
from canary.plan import plan_from_dict
from canary.release import Release, emit
from canary.wiring import reporting_release
from tests.conftest import _fast_plan_data
from tests.support.waiting import wait_until

RUN_IDS: dict[str, str] = {}
PASSED: dict[str, float] = {}


@flow(name="gate-test", persist_result=False)
def gated(gate: dict[str, Any], release_id: str, initiator: str | None = None) -> Any:
    """step `before` → the gate → step `after`; a refused gate ends Failed with its message."""
    RUN_IDS[release_id] = str(flow_run.get_id())
    plan = plan_from_dict(_fast_plan_data())  # reviews v1 -> v2
    release = Release(plan=plan, release_id=release_id, initiator=initiator)
    with reporting_release(release):  # where a release's events go: run log, Prefect events
        emit(release, EventKind.PHASE_STARTED, "header-route", canary_weight=0)
        emit(release, EventKind.PHASE_FINISHED, "header-route", canary_weight=0)
        outcome = await_gate(Gate.model_validate(gate), release, canary_weight=0)
        PASSED[release_id] = time.monotonic()
        if not outcome.proceed:
            return Failed(message=outcome.message)
        emit(release, EventKind.WEIGHT_CHANGED, "step-1", canary_weight=20)
    return outcome.model_dump(mode="json")


class GatedRun:
    """A `gated` flow run in a background thread, with the test's view of it."""

    def __init__(
        self,
        gate: dict[str, Any],
        *notifiers: Notifier,
        initiator: str | None = None,
        release_id: str | None = None,
    ):
        self.gate = gate
        self.release_id = release_id or f"rel-{uuid.uuid4().hex[:10]}"
        self.state: State | None = None
        self._notifiers = notifiers
        self._initiator = initiator
        context = contextvars.copy_context()
        self._thread = threading.Thread(target=context.run, args=(self._run,), daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with notifying(*self._notifiers):
            self.state = gated(self.gate, self.release_id, self._initiator, return_state=True)

    @property
    def run_id(self) -> str:
        return wait_until(lambda: RUN_IDS.get(self.release_id), 30, message="the flow run id")

    def server_state(self) -> State:
        with get_client(sync_client=True) as client:
            return client.read_flow_run(self.run_id).state

    def wait_paused(self, pause_key: str | None = None, timeout: float = 30) -> State:
        def paused() -> State | None:
            state = self.server_state()
            if not (state and state.is_paused()):
                return None
            if pause_key and state.state_details.pause_key != pause_key:
                return None
            return state

        return wait_until(paused, timeout, interval=0.1, message=f"pause {pause_key or ''}")

    def passed_at(self, timeout: float) -> float:
        return wait_until(
            lambda: PASSED.get(self.release_id),
            timeout,
            interval=0.02,
            message="the flow to pass the gate",
        )

    def finish(self, timeout: float = 30) -> State:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the flow did not finish"
        assert self.state is not None
        return self.state

    def outcome(self) -> GateOutcome | None:
        return recorded_decision(self.release_id, self.gate["before"])
