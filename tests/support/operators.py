"""A release run in a background thread that operators act on (canary.control)."""

from __future__ import annotations

from typing import Any

from prefect.client.orchestration import get_client

from canary.control.state import ControlRecord, load_record
from canary.events import EventKind, ReleaseEvent
from canary.notify import notifying
from canary.planner import canary_weight
from tests.support.releases import release_outcome, start_in_thread
from tests.support.waiting import wait_until


class OperatedRelease:
    """canary_release against a sandbox, in a thread, with its events and its run's record."""

    def __init__(self, plan: Any, box: Any, release_id: str):
        self.plan, self.box, self.release_id = plan, box, release_id
        self.events: list[ReleaseEvent] = []
        self.outcome: Any = None
        self.thread = start_in_thread(self._run)

    def notify(self, event: ReleaseEvent) -> None:
        self.events.append(event)

    def _run(self) -> None:
        with notifying(self):
            self.outcome = release_outcome(self.plan, self.box, self.release_id)

    @property
    def run_id(self) -> str:
        return wait_until(lambda: run_id_of(self.release_id), 60, 0.1, "the release's flow run")

    def record(self) -> ControlRecord | None:
        return load_record(self.run_id)

    def holding(self, phase: str, timeout: float = 60) -> ControlRecord:
        """Wait until the release holds `phase` (its control record says so)."""

        def found() -> ControlRecord | None:
            record = self.record()
            return record if record is not None and record.holding == phase else None

        return wait_until(found, timeout, 0.1, f"the release holding {phase}")

    def weight(self) -> int:
        """The canary's weight as the cluster routes it now."""
        return canary_weight(self.plan, self.box.get("virtualservices", "reviews"))

    def state(self) -> Any:
        with get_client(sync_client=True) as client:
            return client.read_flow_run(self.run_id).state

    def kinds(self) -> list[str]:
        return [e.kind.value for e in self.events]

    def of_kind(self, kind: EventKind) -> list[ReleaseEvent]:
        return [e for e in self.events if e.kind is kind]

    def seen(self, kind: EventKind, timeout: float = 60) -> ReleaseEvent:
        return wait_until(lambda: next(iter(self.of_kind(kind)), None), timeout, 0.05, kind.value)

    def finish(self, timeout: float = 120) -> Any:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the release did not finish"
        return self.outcome


def run_id_of(release_id: str) -> str | None:
    """The flow run whose `release_id` parameter is this one."""
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(limit=200)
    found = next((r for r in runs if r.parameters.get("release_id") == release_id), None)
    return str(found.id) if found is not None else None


def scale_canary_to_zero(box: Any, plan: Any) -> None:
    """A fault in the cluster: the canary's pods go away (someone scaled it to zero)."""
    from kubernetes import client

    apps = client.AppsV1Api(box.target.api_client())
    apps.patch_namespaced_deployment_scale(
        plan.canary_deployment, plan.namespace, {"spec": {"replicas": 0}}
    )
