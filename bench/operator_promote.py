"""Promote skips a 10-minute hold: how long from `canary promote` to the hold's end.

    python bench/operator_promote.py [--runs 5]

Each run starts a fresh sandbox and the canary_release flow (this process, one Prefect
server for all runs) with one step holding 600 s. Once the release holds it (its control
record says so), the bench asks for a promote as `canary promote` does (canary.control.
requests, not waiting for the answer) and times the request to the step's phase-finished
event (one clock: the flow runs in this process).

Yardstick, in the same run and the same way: `canary abort` of a release in the same
10-minute hold, timed to its rollback event: the other way an operator ends a hold early.

Target: a promote ends the hold within 2 s (every run).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sandbox.demo import local_prefect  # noqa: E402 - needs the path above

HOLD_S = 600.0
TARGET_S = 2.0
OPERATOR = "U0BENCH"


class Ended:
    """A notifier that notes when the first event `ends` says ends the hold came."""

    def __init__(self, ends: Callable[[Any], bool]):
        self.ends = ends
        self.at: float | None = None

    def notify(self, event: Any) -> None:
        if self.at is None and self.ends(event):
            self.at = time.monotonic()


def plan() -> Any:
    from canary.plan import plan_from_dict
    from tests.conftest import _fast_plan_data

    analysis = {"interval": 1, "threshold": 1}
    return plan_from_dict(
        _fast_plan_data(analysis=analysis, steps=[{"weight": 20, "hold": HOLD_S}])
    )


def one_run(index: int, end_hold: Callable[[str], None], ends: Callable[[Any], bool]) -> float:
    """Seconds from `end_hold(run id)` to the event that says the hold ended."""
    from canary.control.state import load_record
    from canary.notify import notifying
    from canary.release import ReleaseTarget
    from flows.canary_release import ReleaseRolledBack, canary_release
    from sandbox.emulated import Sandbox
    from tests.support.operators import run_id_of
    from tests.support.releases import start_in_thread
    from tests.support.waiting import wait_until

    release_id = f"bench-promote-{index}-{time.time_ns()}"
    ended = Ended(ends)
    with Sandbox("healthy", seed=index) as box, tempfile.TemporaryDirectory() as tmp:
        box.wait_ready(10)
        kubeconfig = str(box.write_kubeconfig(Path(tmp) / "kubeconfig"))
        target = ReleaseTarget(kubeconfig=kubeconfig, mesh_url=box.ingress_url)

        def release() -> None:
            with notifying(ended), contextlib.suppress(ReleaseRolledBack):  # the aborted
                canary_release(plan(), target, release_id)

        thread = start_in_thread(release)
        run_id = wait_until(lambda: run_id_of(release_id), 60, 0.1, "the flow run")

        def holding() -> bool:
            record = load_record(run_id)
            return record is not None and record.holding == "step-1"

        wait_until(holding, 120, 0.1, "the release holding step-1")
        asked = time.monotonic()
        end_hold(run_id)
        wait_until(lambda: ended.at, 60, 0.01, "the hold to end")
        thread.join(120)
    assert ended.at is not None
    return ended.at - asked


def promote(run_id: str) -> None:
    from canary.control.requests import request

    request(run_id, "promote", OPERATOR, wait=0)


def abort(run_id: str) -> None:
    from canary.approvals.decisions import abort as abort_run

    abort_run(run_id, OPERATOR)


def step_finished(event: Any) -> bool:
    return event.kind.value == "phase-finished" and event.phase == "step-1"


def rolling_back(event: Any) -> bool:
    return event.kind.value == "rollback"


def summary(name: str, seconds: list[float]) -> str:
    ordered = sorted(seconds)
    return (
        f"{name:<30} median {statistics.median(ordered):5.2f} s   max {ordered[-1]:5.2f} s"
        f"   (n={len(ordered)})"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    with local_prefect() as prefect:  # before Prefect is imported
        if prefect is not None:
            prefect.wait_ready()
        return measure(args.runs)


def measure(runs: int) -> int:
    import flows.canary_release  # noqa: F401 - sets up Prefect's logging, to be quietened
    from flows.command import quiet_prefect_console

    quiet_prefect_console()
    promotes, aborts = [], []
    for index in range(1, runs + 1):  # interleaved: both see the same machine
        promotes.append(one_run(index, promote, step_finished))
        aborts.append(one_run(index, abort, rolling_back))
        print(f"run {index}: promote {promotes[-1]:5.2f} s   abort {aborts[-1]:5.2f} s", flush=True)
    print()
    print(summary(f"promote -> {HOLD_S:g} s hold ended", promotes))
    print(summary("abort -> rollback (yardstick)", aborts))
    ratio = statistics.median(promotes) / statistics.median(aborts)
    print(f"ratio of medians               {ratio:5.2f}")
    within = sum(s <= TARGET_S for s in promotes)
    print(f"within {TARGET_S:g} s: {within} of {len(promotes)} promotes (target: all)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
