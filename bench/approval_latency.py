"""Click to resume: how long a signed Slack click takes to move a paused release on.

A real Prefect server, the Slack stub, `canary approvals serve` as its own process, and a
flow paused at a gate (the gate of the approvals tests). For each of N gates the bench
waits until the run is paused, clicks Approve through the listener, and times the click
to the moment the flow went past the gate (one clock: the flow runs in this process).

Yardstick, in the same run: the same gate resumed directly through the Prefect API with
the same input (what the listener does after checking the click), so the ratio shows
what the listener's own work (signature, binding, approvers, claim) costs.

    python bench/approval_latency.py [--clicks 20]

Target: median click to resume under 2 s, p90 under 3 s.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SIGNING_SECRET = "bench0signing0secret"
APPROVER = "U0BENCH"
GATE = {"before": "promote", "approvers": {"users": [APPROVER]}, "timeout": "120s"}


@contextlib.contextmanager
def stack(directory: Path) -> Iterator[str]:
    """Prefect server, Slack stub and listener; yields the listener's URL."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from tests.support.listener import approval_listener
    from tests.support.prefect_server import PrefectServer
    from tests.support.slack_stub import BOT_TOKEN, SlackStub

    with PrefectServer() as server, SlackStub() as slack:
        slack_env = {
            "SLACK_BOT_TOKEN": BOT_TOKEN,
            "SLACK_SIGNING_SECRET": SIGNING_SECRET,
            "SLACK_API_URL": slack.url,
        }
        os.environ.update(slack_env)  # the flow's own Slack client (its members lookups)
        env = os.environ | server.client_env() | slack_env
        with (
            temporary_settings({PREFECT_API_URL: server.api_url}),
            approval_listener(env, directory / "listener.log") as url,
        ):
            yield url


def timed_gate(decide: Callable[[str], None]) -> float:
    """One gated run: seconds from the decision to the flow passing the gate."""
    from tests.approvals.gate_flows import GatedRun

    run = GatedRun(GATE)
    run.wait_paused("gate-promote", timeout=60)
    decided = time.monotonic()
    decide(run.run_id)
    passed = run.passed_at(timeout=60)
    assert run.finish(timeout=60).is_completed()
    return passed - decided


def click(listener: str) -> Callable[[str], None]:
    from canary.slack.buttons import sign_binding
    from tests.support.slack_stub import block_actions, send_interaction

    def decide(run_id: str) -> None:
        value = sign_binding(run_id, "promote", SIGNING_SECRET)
        message = {"ts": "1.000001", "blocks": []}
        status, body = send_interaction(
            listener,
            SIGNING_SECRET,
            block_actions(APPROVER, "canary_approve", value, "C0BENCH", message),
        )
        assert status == 200, body

    return decide


def direct(run_id: str) -> None:
    from prefect.flow_runs import resume_flow_run

    resume_flow_run(run_id, run_input={"decision": "approve", "approver": APPROVER})


def summary(name: str, seconds: list[float]) -> str:
    ordered = sorted(seconds)
    p90 = ordered[max(0, round(0.9 * len(ordered)) - 1)]
    return (
        f"{name:<22} median {statistics.median(ordered):5.2f} s   p90 {p90:5.2f} s   "
        f"max {ordered[-1]:5.2f} s   (n={len(ordered)})"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clicks", type=int, default=20)
    args = parser.parse_args()
    import tests.approvals.gate_flows  # noqa: F401 - its flow sets up Prefect's logging
    from flows.command import quiet_prefect_console

    quiet_prefect_console()
    with tempfile.TemporaryDirectory(prefix="approval-bench-") as tmp, stack(Path(tmp)) as url:
        clicks, directs = [], []
        for _ in range(args.clicks):  # interleaved: both see the same machine
            clicks.append(timed_gate(click(url)))
            directs.append(timed_gate(direct))
    print(summary("Slack click -> resume", clicks))
    print(summary("API resume (yardstick)", directs))
    ratio = statistics.median(clicks) / statistics.median(directs)
    print(f"ratio of medians        {ratio:5.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
