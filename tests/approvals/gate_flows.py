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

from canary.approvals.gates import GateContext, GateOutcome, await_gate, gate_already_decided
from canary.approvals.spec import Gate
from canary.events import EventKind, ReleaseEvent
from canary.notify import Notifier, current_notifier, notifying
from tests.support.waiting import wait_until

RUN_IDS: dict[str, str] = {}
PASSED: dict[str, float] = {}


def _event(ctx: GateContext, kind: EventKind, phase: str, weight: int | None) -> ReleaseEvent:
    return ReleaseEvent(
        release_id=ctx.release_id,
        service=ctx.service,
        namespace=ctx.namespace,
        stable_version=ctx.stable_version,
        canary_version=ctx.canary_version,
        kind=kind,
        phase=phase,
        canary_weight=weight,
    )


@flow(name="gate-test", persist_result=False)
def gated(gate: dict[str, Any], release_id: str, initiator: str | None = None) -> Any:
    """step `before` → the gate → step `after`; a refused gate ends Failed with its message."""
    RUN_IDS[release_id] = str(flow_run.get_id())
    ctx = GateContext(
        release_id=release_id,
        service="reviews",
        stable_version="v1",
        canary_version="v2",
        canary_weight=0,
        initiator=initiator,
    )
    notifier = current_notifier()
    notifier.notify(_event(ctx, EventKind.PHASE_STARTED, "header-route", 0))
    notifier.notify(_event(ctx, EventKind.PHASE_FINISHED, "header-route", 0))
    outcome = await_gate(Gate.model_validate(gate), ctx)
    PASSED[release_id] = time.monotonic()
    if not outcome.proceed:
        return Failed(message=outcome.message)
    notifier.notify(_event(ctx, EventKind.WEIGHT_CHANGED, "step-1", 20))
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
        return gate_already_decided(self.release_id, self.gate["before"])
