"""`canary demo`: the BookInfo reviews release, v1 -> v2, on the built-in sandbox.

The same flow as `canary run`, against the sandbox's API server through a kubeconfig and
through its mesh ingress, with the plan's waits shortened so it ends in seconds. While it
runs, the traffic split the simulated users see is printed every second.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from canary.events import EventKind, ReleaseEvent
from canary.exit_codes import BAD_INPUT
from canary.plan import PlanError, ReleasePlan, load_plan, plan_from_dict

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
DEMO_PLAN = CONFIGS / "bookinfo-reviews.yaml"

# The shortened waits (seconds).
INTERVAL = 1.0
HOLD = 2.0
READINESS = 8.0
SPLIT_EVERY = 1.0
SPLIT_WINDOW = 1.0
# With metric analysis: a round every 2 s, each metric read over the last 5 s, so that
# PromQL's rate() has several 1 s scrapes to work with.
ANALYSIS_INTERVAL = 2.0
METRIC_WINDOW = "5s"
# Simulated users per second: enough canary requests in a 2 s hold for a p99 to mean something.
DEMO_RPS = 200.0
# Gates are answered by the demo itself, as a person would from Slack or the Prefect UI.
GATE_TIMEOUT = 60.0


def demo_main(argv: list[str]) -> int:
    """`canary demo [--scenario S] [--prometheus URL] [--plan PLAN] [--report PATH]`."""
    from canary.report.publishing import reporting_to

    args = _parser().parse_args(argv)
    with reporting_to(args.report):  # the demo's release writes its report there
        return demo_command(args)


def _parser() -> argparse.ArgumentParser:
    from canary.arguments import CommandParser

    parser = CommandParser(
        prog="canary demo", description="run the BookInfo release on the built-in sandbox"
    )
    parser.add_argument(
        "--scenario", default="healthy", help="healthy, faulty, slow, unready or a file"
    )
    parser.add_argument("--prometheus", metavar="URL", help="default: start a local Prometheus")
    parser.add_argument(
        "--plan", metavar="PLAN", help="a variant of configs/bookinfo-reviews.yaml to run"
    )
    parser.add_argument(
        "--report", metavar="PATH", help="write the release report there (markdown; PNG beside)"
    )
    return parser


def demo_command(args: argparse.Namespace) -> int:
    began = time.monotonic()
    try:
        plan = demo_plan(load_plan(getattr(args, "plan", None) or DEMO_PLAN))
    except PlanError as exc:
        print(exc, file=sys.stderr)
        return BAD_INPUT
    from sandbox.emulated import Sandbox

    try:
        sandbox = Sandbox(args.scenario, rps=DEMO_RPS)
    except (ValueError, OSError) as exc:
        print(f"canary demo: {exc}", file=sys.stderr)
        return BAD_INPUT
    try:
        with contextlib.ExitStack() as running:
            # Prefect's server, the sandbox and Prometheus start side by side.
            prefect = running.enter_context(local_prefect())
            running.enter_context(sandbox)
            given = getattr(args, "prometheus", None)
            url = running.enter_context(prometheus_for(sandbox, given))
            workdir = Path(running.enter_context(tempfile.TemporaryDirectory(prefix="demo-")))
            if prefect is not None:
                prefect.wait_ready()
            ready = time.monotonic()
            plan = with_metrics_source(plan, url, sys.stdout)
            code = run_demo(plan, sandbox, workdir, sys.stdout)
            released = time.monotonic()
    except OSError as exc:
        print(f"canary demo: {exc}", file=sys.stderr)
        return BAD_INPUT
    print(
        f"timing    start-up {ready - began:.1f}s   release {released - ready:.1f}s   "
        f"shut-down {time.monotonic() - released:.1f}s"
    )
    return code


@contextlib.contextmanager
def prometheus_for(sandbox: Any, given: str | None) -> Iterator[str | None]:
    """The Prometheus to analyse metrics with: the one given, else a local one, else none."""
    if given:
        yield given
        return
    from sandbox.prometheus import PrometheusServer, find_prometheus_binary

    binary = find_prometheus_binary()
    if binary is None:
        yield None
        return
    with PrometheusServer(
        [sandbox.metrics_url], binary=binary, wait_for_first_scrape=False
    ) as prometheus:
        yield prometheus.url


def with_metrics_source(plan: ReleasePlan, url: str | None, out: TextIO) -> ReleasePlan:
    """The plan reading its metrics from `url`; without one, without metric analysis."""
    if not plan.analysis.metrics:
        return plan
    data = plan.model_dump(by_alias=True, exclude_none=True)
    if url is None:
        print("metrics   no Prometheus found: running without metric analysis", file=out)
        data["analysis"].pop("metrics", None)
    else:
        print(f"metrics   {url}", file=out)
        data["analysis"].setdefault("prometheus", {})["url"] = url
        data["analysis"]["interval"] = ANALYSIS_INTERVAL
        for metric in data["analysis"]["metrics"]:
            metric.setdefault("interval", METRIC_WINDOW)
    return plan_from_dict(data, str(DEMO_PLAN))


def run_demo(plan: ReleasePlan, sandbox: Any, workdir: Path, out: TextIO) -> int:
    from canary.release import ReleaseTarget
    from flows.command import run_release

    kubeconfig = sandbox.write_kubeconfig(workdir / "kubeconfig")
    scenario = getattr(sandbox.scenario, "name", "")
    print(f"sandbox   {sandbox.api_url}  scenario {scenario}", file=out)
    print(f"release   {plan.service} {plan.stable.version} -> {plan.canary.version}", file=out)
    print(f"prefect   {os.environ.get('PREFECT_API_URL')}", file=out)
    sandbox.wait_ready(10)
    printer = SplitPrinter(sandbox, plan, out)
    printer.start()
    target = ReleaseTarget(kubeconfig=str(kubeconfig), mesh_url=sandbox.ingress_url)
    code = run_release(
        plan,
        target,
        out=out,
        watchers=[printer, GateAnswerer(out)],
        before_summary=printer.stop,
    )
    print_final_state(sandbox, plan, target, out)
    return code


def demo_plan(plan: ReleasePlan) -> ReleasePlan:
    """The plan with its waits shortened: 1 s interval, 2 s holds, 8 s readiness deadline."""
    data = plan.model_dump(by_alias=True, exclude_none=True)
    data["analysis"]["interval"] = INTERVAL
    for key in ("stepWeights", "stepWeight", "maxWeight"):
        data["analysis"].pop(key, None)
    data["steps"] = [{"weight": s.weight, "hold": HOLD} for s in plan.weighted_steps()]
    if "headerRoute" in data:
        data["headerRoute"]["hold"] = HOLD
    data["promotion"]["hold"] = HOLD
    data["cleanup"]["delay"] = 0
    data["timeouts"]["readiness"] = READINESS
    for gate in data.get("gates", []):
        gate["timeout"] = GATE_TIMEOUT
    return plan_from_dict(data, str(DEMO_PLAN))


@contextlib.contextmanager
def local_prefect() -> Iterator[Any]:
    """The demo's own Prefect server, unless PREFECT_API_URL names one.

    Prefect reads its settings from the environment when it is imported: this runs first.
    """
    if os.environ.get("PREFECT_API_URL"):
        yield None
        return
    from sandbox.demo_prefect import demo_prefect

    with demo_prefect() as server:
        os.environ["PREFECT_API_URL"] = server.api_url
        os.environ["PREFECT_HOME"] = str(server.home)
        os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
        try:
            yield server
        finally:
            _deliver_to_prefect()  # while the server still listens


def _deliver_to_prefect() -> None:
    """Send the logs and events Prefect still holds (it sends them in batches)."""
    if "prefect" not in sys.modules:
        return
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (APILogWorker, EventsWorker):
        worker.drain_all(timeout=10)


# --- what the users see --------------------------------------------------------------


class SplitPrinter:
    """Once the release starts, prints every second the share each version served.

    It is a notifier: the release's first event starts the printing.
    """

    def __init__(self, sandbox: Any, plan: ReleasePlan, out: TextIO):
        self.sandbox, self.plan, self.out = sandbox, plan, out
        self._live = threading.Event()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="demo-split", daemon=True)

    def notify(self, event: ReleaseEvent) -> None:
        self._live.set()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        self._live.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        self._live.wait()
        while not self._stopped.wait(SPLIT_EVERY):
            split = self.sandbox.simulator.split(SPLIT_WINDOW, self.plan.service)
            if split:
                print(f"          traffic  {format_split(split, self.plan)}", file=self.out)


class GateAnswerer:
    """Approves each gate the release stops at, through the Prefect API, as a person would.

    Each time a gate asks (again), another demo person answers: a four-eyes gate without
    an initiator asks twice, and one person alone never passes it.
    """

    def __init__(self, out: TextIO):
        self.out = out
        self._asked: dict[str, int] = {}

    def notify(self, event: ReleaseEvent) -> None:
        if event.kind != EventKind.APPROVAL_REQUESTED:
            return
        # Keyed by gate: an inconclusive analysis asks during a phase under a key of its own.
        key = event.gate or event.phase or ""
        self._asked[key] = asked = self._asked.get(key, 0) + 1
        who = "demo" if asked == 1 else f"demo-{asked}"
        what = (
            f"gate before {event.phase}"
            if key == event.phase
            else f"analysis pause at {event.phase}"
        )
        # The release id is the flow run id: the demo does not set one of its own.
        args = (event.identity.release_id, key, what, who)
        threading.Thread(target=self._approve, args=args, daemon=True).start()

    def _approve(self, run_id: str, gate: str, what: str, who: str) -> None:
        from canary.approvals.decisions import DecisionError, auto_approve

        try:
            auto_approve(run_id, gate, who=who, timeout=GATE_TIMEOUT)
        except DecisionError as exc:
            print(f"          {what}: not answered: {exc}", file=self.out)
            return
        print(f"          {what}: approved by {who}", file=self.out)


def format_split(split: dict[str, float], plan: ReleasePlan) -> str:
    """`v1  80%   v2  20%`, the service's versions first, other outcomes after."""
    prefix = f"{plan.service}-"
    versions = [plan.stable.version, plan.canary.version]
    shares = {v: split.get(prefix + v, 0.0) for v in versions}
    others = {k: v for k, v in split.items() if k not in {prefix + v for v in versions}}
    parts = [f"{v} {100 * s:3.0f}%" for v, s in shares.items()]
    parts += [f"{k} {100 * s:3.0f}%" for k, s in sorted(others.items())]
    return "   ".join(parts)


def print_final_state(sandbox: Any, plan: ReleasePlan, target: Any, out: TextIO) -> None:
    """The routing read back through the plan's router, the Deployments, the traffic now."""
    from canary.routing.factory import router_for

    router = router_for(plan, target.api_client())
    routing = router.get_routes()
    weight = routing.canary_weight(plan) if routing is not None else 0
    deployments = sorted(
        d["metadata"]["name"]
        for d in sandbox.store.list("deployments", plan.namespace)
        if d["metadata"]["name"].startswith(f"{plan.service}-")
    )
    split = sandbox.simulator.split(SPLIT_WINDOW, plan.service)
    print(
        f"routing   {plan.stable.version} {100 - weight}%   {plan.canary.version} {weight}%"
        f"   ({router.route_object().describe()} read back)",
        file=out,
    )
    print(f"traffic   {format_split(split, plan)}   (last {SPLIT_WINDOW:g}s)", file=out)
    print(f"running   {', '.join(deployments) or '-'}", file=out)
