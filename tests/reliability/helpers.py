"""What the reliability tests share: releases in the background, routing samplers, plans."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import yaml

from canary.cluster import is_ready
from canary.lease import LEASE_HOLDER, annotations_of
from canary.planner import PHASE_ANNOTATION, canary_weight, managed_route_names
from flows.canary_release import canary_release
from tests.support.releases import start_in_thread
from tests.support.waiting import wait_until


class BackgroundRelease:
    """canary_release in a thread (with its final Prefect state), so the test can act on it."""

    def __init__(self, plan: Any, box: Any, release_id: str | None = None):
        self.plan = plan
        self.box = box
        self.state: Any = None
        self.error: BaseException | None = None
        self.release_id = release_id
        self.thread = start_in_thread(self._run)

    def _run(self) -> None:
        try:
            self.state = canary_release(
                self.plan, self.box.target, self.release_id, return_state=True
            )
        except BaseException as exc:  # the test reports it
            self.error = exc

    def wait_for_phase(self, phase: str, timeout: float = 60) -> str:
        """Wait until the VirtualService says `phase`; returns the run holding the lease."""
        vs = self.plan.virtual_service

        def reached() -> str | None:
            notes = annotations_of(self.box.get("virtualservices", vs, self.plan.namespace))
            return notes.get(LEASE_HOLDER) if notes.get(PHASE_ANNOTATION) == phase else None

        return wait_until(reached, timeout, interval=0.02, message=f"phase {phase}")

    def finish(self, timeout: float = 90) -> Any:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the release did not finish"
        assert self.error is None, f"the flow raised {self.error!r}"
        return self.state


class _Sampler:
    """Calls `sample` every `interval` seconds in a thread, for the `with` block."""

    def __init__(self, interval: float):
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> _Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            time.sleep(self.interval)

    def sample(self) -> None:
        raise NotImplementedError


class WeightSampler(_Sampler):
    """The canary's weight in the VirtualService, read from the store every few ms."""

    def __init__(self, box: Any, plan: Any, interval: float = 0.005):
        super().__init__(interval)
        self.box, self.plan = box, plan
        self.weights: list[int] = []

    def sample(self) -> None:
        vs = self.box.get("virtualservices", self.plan.virtual_service, self.plan.namespace)
        if vs is not None:
            weight = canary_weight(self.plan, vs)
            if not self.weights or self.weights[-1] != weight:
                self.weights.append(weight)


class RoutingSampler(_Sampler):
    """Samples the mesh's routing table: where each kind of request would go, right now.

    A sample "strands" traffic when some share of a service's requests would end on a
    mesh answer (503 no healthy upstream or cluster not found, 404 no route) instead of a
    workload with ready pods.
    """

    def __init__(self, box: Any, interval: float = 0.005):
        super().__init__(interval)
        self.simulator = box.sandbox.simulator
        self.samples = 0
        self.stranded: list[tuple[float, str, dict[str, float]]] = []

    def sample(self) -> None:
        routing = self.simulator.sample_routing()
        self.samples += 1
        for service, kinds in routing["expected"].items():
            for split in kinds.values():
                lost = {k: v for k, v in split.items() if not k[:1].isalpha() and v > 0}
                if lost:
                    self.stranded.append((time.monotonic(), service, lost))


def assert_all_on_stable(box: Any, plan: Any) -> None:
    """100 % of the service's traffic on a ready stable; no pipeline routes; no canary."""
    vs = box.get("virtualservices", plan.virtual_service, plan.namespace)
    assert canary_weight(plan, vs) == 0
    assert managed_route_names(vs) == []
    stable = {"destination": {"host": plan.host, "subset": plan.stable.version}}
    assert [r["route"] for r in vs["spec"]["http"]] == [[stable]]
    assert box.get("deployments", plan.canary_deployment, plan.namespace) is None
    assert is_ready(box.get("deployments", plan.stable_deployment, plan.namespace))


def write_plan(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path
