"""Time to rollback, end to end: from the moment a canary turns bad to all traffic on stable.

    python bench/time_to_rollback.py [--runs 10] [--seed 7] [--judges threshold-1,sequential]

Each run starts a fresh sandbox (200 requests/s) whose v2 starts answering 5xx to 10 % of
requests `after` seconds after it becomes ready (a scenario with `after:`, see
sandbox/mesh/scenarios.py), a real Prometheus scraping it every second, and the canary_release
flow with metric analysis every 2 s over 5 s windows. The test phase runs a few checks
and passes (the fault has not started yet); `after` is 3 s plus a seeded uniform share of
one analysis interval, so the fault starts during step-1 (20 %) at a random point of the
analysis schedule.

Measured per run: from the fault's onset (the moment the sandbox's mesh first saw v2 ready,
plus `after`) until the VirtualService no longer sends any request to v2, watched on the
sandbox's object store (woken by every write, at the latest every 50 ms). Also split in
two: onset to the flow's rollback decision (its rollback event) and decision to routing.

Judges: threshold-1 and threshold-2 (the threshold judge rolling back at the 1st / 2nd
failed check in a row) and sequential (alpha 0.01, rejection final at once). One Prefect
server serves every run: $PREFECT_API_URL if set, else one ephemeral server.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sandbox.demo import local_prefect  # noqa: E402 - needs the path above

INTERVAL = 2.0  # analysis interval, seconds
WINDOW = "5s"  # each metric's query window: several 1 s scrapes for rate()
RPS = 200.0
ERROR_RATE = 0.10
AFTER_BASE = 3.0  # seconds after v2 is ready; deploy -> step-1 takes about 1 s
STEP_HOLD = 20.0  # a judge that has not decided by then has missed the fault
TARGET_INTERVALS = 2.0

JUDGES: dict[str, dict[str, Any]] = {
    "threshold-1": {"threshold": 1, "judge": {"kind": "threshold"}},
    "threshold-2": {"threshold": 2, "judge": {"kind": "threshold"}},
    "sequential": {"threshold": 2, "judge": {"kind": "sequential", "latencyThresholdMs": 250}},
}


@dataclass
class Run:
    judge: str
    index: int
    after: float
    onset: float | None = None  # monotonic
    weighted: float | None = None  # when a route first sent requests to v2
    decided: float | None = None
    stable: float | None = None
    outcome: str = ""
    reason: str = ""
    wall: float = 0.0  # the whole run, start-up included

    @property
    def to_stable(self) -> float | None:
        if self.onset is None or self.stable is None or self.stable < self.onset:
            return None
        return self.stable - self.onset

    @property
    def valid(self) -> bool:
        """The fault began while the canary had traffic, as the bench intends."""
        return None not in (self.onset, self.weighted) and self.weighted < self.onset

    @property
    def to_decision(self) -> float | None:
        if self.onset is None or self.decided is None or self.decided < self.onset:
            return None
        return self.decided - self.onset


# --- one run ---------------------------------------------------------------------------


def scenario(after: float) -> Any:
    """v2 behaves like v1 until it has been ready `after` seconds, then fails 10 %."""
    from sandbox.mesh.scenarios import scenario_from_dict

    return scenario_from_dict(
        {
            "name": "late-fault",
            "description": f"v2 answers 5xx to {ERROR_RATE:.0%} of requests {after:.2f}s "
            "after it becomes ready",
            "versions": {"v2": {"errorRate": ERROR_RATE, "after": f"{after:.3f}s"}},
        }
    )


def plan_for(judge: str, prometheus_url: str) -> Any:
    import yaml

    from canary.plan import plan_from_dict

    data = yaml.safe_load((REPO / "configs" / "bookinfo-reviews.yaml").read_text())
    for unattended in ("gates", "notifications"):
        data.pop(unattended, None)
    data["tests"]["checks"][0].update(count=20, maxFailures=2)
    data["headerRoute"]["hold"] = 0
    data["steps"] = [{"weight": 20, "hold": STEP_HOLD}]
    data["promotion"] = {"hold": 0}
    data["timeouts"] = {"readiness": 10}
    data["analysis"] = {
        "interval": INTERVAL,
        "noData": {"minRequests": 20},
        "prometheus": {"url": prometheus_url, "timeout": 2, "retries": 1},
        "metrics": [
            {"name": "request-success-rate", "thresholdRange": {"min": 99}, "interval": WINDOW},
            {"name": "request-duration", "thresholdRange": {"max": 500}, "interval": WINDOW},
        ],
        **JUDGES[judge],
    }
    return plan_from_dict(data, "time-to-rollback")


class Watch(threading.Thread):
    """Watches the sandbox: when v2 is first ready in the mesh, and when no route sends to it."""

    def __init__(self, box: Any, plan: Any, run: Run):
        super().__init__(daemon=True)
        self.box, self.plan, self.run_ = box, plan, run
        self.done = threading.Event()

    def run(self) -> None:
        store, revision, sent = self.box.store, -1, False
        while not self.done.is_set():
            now = time.monotonic()
            if self.run_.onset is None:
                ready_for = self.box.simulator.router.ready_for(
                    self.plan.namespace, self.plan.canary_deployment
                )
                if ready_for is not None:
                    self.run_.onset = now - ready_for + self.run_.after
            vs = store.get("virtualservices", self.plan.namespace, self.plan.virtual_service)
            if not sent and vs and canary_weight(self.plan, vs) > 0:
                sent, self.run_.weighted = True, now
            if sent and not sends_to_canary(self.plan, vs):
                self.run_.stable = now
                return
            revision = store.wait(revision, 0.05)


def sends_to_canary(plan: Any, vs: dict[str, Any] | None) -> bool:
    """Whether any route names the canary's subset (weighted, header or test routes)."""
    routes = (vs or {}).get("spec", {}).get("http", [])
    return any(
        d.get("destination", {}).get("subset") == plan.canary.version
        for r in routes
        for d in r.get("route", [])
    )


class Decisions:
    """A notifier noting when the flow decided to roll back."""

    def __init__(self, run: Run):
        self.run = run

    def notify(self, event: Any) -> None:
        if event.kind.value == "rollback" and self.run.decided is None:
            self.run.decided = time.monotonic()


def canary_weight(plan: Any, vs: dict[str, Any]) -> int:
    from canary.planner import canary_weight as weight

    return weight(plan, vs)


def one_run(judge: str, index: int, after: float, seed: int, prometheus_bin: str) -> Run:
    from canary.notify import notifying
    from canary.release import ReleaseTarget
    from flows.canary_release import ReleaseRolledBack, canary_release
    from sandbox.emulated import Sandbox
    from sandbox.prometheus import PrometheusServer

    run, began = Run(judge, index, after), time.monotonic()
    with (
        Sandbox(scenario(after), seed=seed, rps=RPS) as box,
        PrometheusServer(
            [box.metrics_url], binary=prometheus_bin, wait_for_first_scrape=False
        ) as prometheus,
        tempfile.TemporaryDirectory(prefix="ttr-") as tmp,
    ):
        box.wait_ready(10)
        plan = plan_for(judge, prometheus.url)
        kubeconfig = str(box.write_kubeconfig(Path(tmp) / "kubeconfig"))
        watch = Watch(box, plan, run)
        watch.start()
        try:
            with notifying(Decisions(run)):
                target = ReleaseTarget(kubeconfig=kubeconfig, mesh_url=box.ingress_url)
                result = canary_release(plan, target, f"ttr-{judge}-{seed}-{index}")
        except ReleaseRolledBack as exc:
            result = exc.result
        finally:
            watch.done.set()
            watch.join(5)
    run.outcome, run.reason = result.outcome, result.reason
    run.wall = time.monotonic() - began
    return run


# --- the report ------------------------------------------------------------------------


def p90(values: list[float]) -> float:
    return (
        statistics.quantiles(values, n=10, method="inclusive")[-1] if len(values) > 1 else values[0]
    )


def summary_rows(runs: list[Run], judges: list[str]) -> list[str]:
    rows = [
        "| judge | runs | rolled back after the onset | median s | p90 s | median intervals "
        "| p90 intervals | median onset → decision s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for judge in judges:
        mine = [r for r in runs if r.judge == judge and r.valid]
        times = sorted(t for r in mine if (t := r.to_stable) is not None)
        decisions = [t for r in mine if (t := r.to_decision) is not None]
        if not times:
            rows.append(f"| {judge} | {len(mine)} | 0 | — | — | — | — | — |")
            continue
        med, high = statistics.median(times), p90(times)
        rows.append(
            f"| {judge} | {len(mine)} | {len(times)} | {med:.2f} | {high:.2f} "
            f"| {med / INTERVAL:.2f} | {high / INTERVAL:.2f} "
            f"| {statistics.median(decisions):.2f} |"
        )
    return rows


def describe(run: Run) -> str:
    def secs(value: float | None) -> str:
        return "   -  " if value is None else f"{value:6.2f}"

    into_step = (
        f"{run.onset - run.weighted:5.2f}s into step-1"
        if run.valid
        else "NOT during step-1 (left out)"
    )
    return (
        f"{run.judge:<12} run {run.index:2d}  fault {into_step}  "
        f"to decision {secs(run.to_decision)}s  to stable {secs(run.to_stable)}s  "
        f"(run {run.wall:4.1f}s)  {run.outcome}: {run.reason[:80]}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="runs per judge (default 10)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--judges", default=",".join(JUDGES), help=f"comma-separated, of {', '.join(JUDGES)}"
    )
    args = parser.parse_args()
    judges = [j.strip() for j in args.judges.split(",") if j.strip()]
    unknown = [j for j in judges if j not in JUDGES]
    if unknown or args.runs < 1:
        parser.error(f"unknown judge {unknown[0]}" if unknown else "--runs must be at least 1")
    prometheus_bin = find_prometheus()
    with local_prefect() as prefect:  # before Prefect is imported
        if prefect is not None:
            prefect.wait_ready()
        return measure(args, judges, prometheus_bin)


def measure(args: argparse.Namespace, judges: list[str], prometheus_bin: str) -> int:
    import flows.canary_release  # noqa: F401 - sets up Prefect's logging, to be quietened
    from flows.command import quiet_prefect_console

    quiet_prefect_console()
    rng = random.Random(args.seed)
    runs, began = [], time.monotonic()
    for judge in judges:
        for index in range(1, args.runs + 1):
            after = AFTER_BASE + rng.uniform(0.0, INTERVAL)
            run = one_run(judge, index, after, args.seed * 1000 + index, prometheus_bin)
            runs.append(run)
            print(describe(run), flush=True)
    print()
    print("\n".join(summary_rows(runs, judges)))
    print(
        f"\n{len(runs)} runs in {time.monotonic() - began:.0f}s; analysis interval "
        f"{INTERVAL:g}s, target median <= {TARGET_INTERVALS:g} intervals"
    )
    return 0


def find_prometheus() -> str:
    from sandbox.prometheus import find_prometheus_binary

    binary = find_prometheus_binary()
    if binary is None:
        sys.exit("time_to_rollback: no Prometheus binary (Debian package 'prometheus')")
    return binary


if __name__ == "__main__":
    sys.exit(main())
