"""Judgement end to end: the simulated bench's scenarios on the sandbox, a real Prometheus
and the Analyzer, in real time, many runs at once.

    python bench/judgement_e2e.py [--runs 20] [--seed 7] [--looks 60] [--interval 10]
                                  [--scenarios healthy,errors+1pt,...] [--sim-runs 200]

Every run is one service of its own in a sandbox (BookInfo's ``reviews`` shape: a Service,
a v1 Deployment and, created here through the Kubernetes API, a v2 Deployment with a
DestinationRule and a VirtualService sending 10 % of the traffic to v2), so its requests,
errors and latencies are independent of every other run's. One sandbox per traffic level
(50, 10 and 1 requests per second per service, as in bench/judgement.py), all scraped every
second by one Prometheus. The canary's behaviour is the scenario's (a scenario file naming
each run's v2 workload); ``noisy-healthy`` changes the behaviour of both versions of its
services every interval, with the simulated bench's shared error and latency bursts.

Each run has three Analyzers, one per judge at its documented settings (``DOCUMENTED`` in
bench/judgement.py), reading the real Prometheus through one provider per run that
answers a query once per look. They look every ``interval`` seconds for ``looks`` looks,
the last one told that the hold ends; the runs' schedules are spread over an interval.
A run's result per judge: the look that rolled back, or whether the end of the hold
paused for a person. Beside each figure: the simulated bench's, for the same settings.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import dataclasses
import heapq
import itertools
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import judgement as sim  # noqa: E402 - the simulated bench, beside this file

NAMESPACE = "default"
SHARE = round(100 * sim.CANARY_SHARE)  # percent of each run's traffic on v2
SCRAPE_S = 2.0  # Prometheus scrapes every sandbox this often (and gives a scrape as long)
LAG_S = SCRAPE_S + 1.0  # a look waits this long past its time: the scrapes up to it are in
WARMUP_S = 60.0  # stable traffic before the first look: the latency bound's baseline
SANDBOX_RUNS = 40  # runs (services) per sandbox process
SHORT = {
    "healthy": "healthy",
    "noisy-healthy": "noisy",
    "low-traffic": "low",
    "very-low-traffic": "vlow",
    "errors+1pt": "err1",
    "errors+5pt": "err5",
    "p99+100ms": "p99",
    "low-traffic+5pt": "low-err5",
    "very-low-traffic+5pt": "vlow-err5",
}


# --- the runs and their analyses ----------------------------------------------------------


@dataclasses.dataclass
class Run:
    scenario: sim.Scenario
    service: str
    offset: float  # seconds after the bench's start of analysis
    analyzers: dict[str, Any] = dataclasses.field(default_factory=dict)
    rolled_back: dict[str, int] = dataclasses.field(default_factory=dict)  # judge -> look
    paused: dict[str, bool] = dataclasses.field(default_factory=dict)
    reasons: dict[str, str] = dataclasses.field(default_factory=dict)
    last: dict[str, Any] = dataclasses.field(default_factory=dict)  # judge -> AnalysisResult
    lags: list[float] = dataclasses.field(default_factory=list)  # each look's start past its time
    now: float = 0.0  # the look's time, the analyzers' clock

    @property
    def canary(self) -> str:
        return f"{self.service}-v2"

    @property
    def stable(self) -> str:
        return f"{self.service}-v1"


def analysis_specs(interval: float) -> dict[str, Any]:
    """Each judge's analysis section at its documented settings."""
    from canary.plan import AnalysisSpec

    threshold, mann_whitney = sim.DOCUMENTED["threshold"], sim.DOCUMENTED["mann-whitney"]
    both = [{"name": "request-success-rate"}, {"name": "request-duration"}]
    ranged = [
        {"name": "request-success-rate", "thresholdRange": {"min": threshold.min_success}},
        {"name": "request-duration", "thresholdRange": {"max": threshold.max_p99}},
    ]

    def counting(cfg: Any) -> dict[str, int]:
        return {"threshold": cfg.threshold, "maxFailures": sim.limit_of(cfg.threshold, cfg.limit)}

    sections = {
        "threshold": {
            **counting(threshold),
            "metrics": ranged,
            "judge": {"kind": "threshold", "confidence": threshold.confidence},
        },
        "mann-whitney": {
            **counting(mann_whitney),
            "metrics": both,
            "judge": {
                "kind": "mann-whitney",
                "confidence": mann_whitney.confidence,
                "effectSizeTolerance": sim.TOLERANCE,
                "minSamples": sim.MIN_SAMPLES,
            },
        },
        "sequential": {"metrics": both, "judge": {"kind": "sequential", "alpha": sim.ALPHA}},
    }
    common = {"interval": interval, "noData": {"minRequests": sim.MIN_REQUESTS}}
    return {k: AnalysisSpec.model_validate(common | v) for k, v in sections.items()}


class OncePerLook:
    """One run's provider for its three analyzers: each query is sent once per look.

    Queries go through a provider of the calling thread's own (HTTP sessions are not
    shared between threads).
    """

    def __init__(self, provider: Callable[[], Any]):
        self._provider = provider
        self._answers: dict[tuple[Any, ...], Any] = {}

    def new_look(self) -> None:
        self._answers.clear()

    def _once(self, key: tuple[Any, ...], ask: Callable[[], Any]) -> Any:
        if key not in self._answers:
            self._answers[key] = ask()
        return self._answers[key]

    def query(self, promql: str, at: float | None = None) -> float | None:
        return self._once(("q", promql, at), lambda: self._provider().query(promql, at))

    def query_vector(self, promql: str, at: float | None = None) -> Any:
        return self._once(("v", promql, at), lambda: self._provider().query_vector(promql, at))

    def query_range(self, promql: str, start: float, end: float, step: float) -> Any:
        return self._once(
            ("r", promql, start, end, step),
            lambda: self._provider().query_range(promql, start, end, step),
        )


def look(run: Run, k: int, looks: int, at: float) -> None:
    """The k-th look of every judge of the run that has not rolled back."""
    from canary.analysis.analyzer import Decision

    run.now = at
    run.lags.append(time.time() - at)
    provider = next(iter(run.analyzers.values())).provider
    provider.new_look()
    for judge, analyzer in run.analyzers.items():
        if judge in run.rolled_back:
            continue
        result = analyzer.check(step="step-1", hold_ending=k == looks)
        run.last[judge] = result
        if result.decision is Decision.ROLLBACK:
            run.rolled_back[judge] = k
            run.reasons[judge] = result.reason
        elif result.decision is Decision.PAUSE:
            run.paused[judge] = True
            run.reasons.setdefault(judge, result.reason)


# --- the sandboxes ------------------------------------------------------------------------


def behaviour_fields(behaviour: Any) -> dict[str, float]:
    return {
        "errorRate": behaviour.error_rate,
        "latencyMedianMs": behaviour.latency_median_ms,
        "latencyP99Ms": behaviour.latency_p99_ms,
    }


def scenario_file(runs: Sequence[Run], directory: Path, index: int) -> Path:
    """Each run's v2 behaves as its scenario's canary; everything else as the baseline."""
    versions = {r.canary: behaviour_fields(r.scenario.canary) for r in runs if r.scenario.faulty}
    path = directory / f"scenario-{index}.yaml"
    data = {
        "name": f"judgement-e2e-{index}",
        "default": behaviour_fields(sim.BASELINE),
        "versions": versions,
    }
    path.write_text(yaml.safe_dump(data))
    return path


def canary_objects(service: str, share: int) -> list[tuple[str, dict[str, Any]]]:
    """The v2 Deployment, the subsets and the route sending ``share`` % to v2, of one run."""
    labels = {"app": service, "version": "v2"}
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": f"{service}-v2", "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": service, "image": f"example/{service}:v2"}]},
            },
        },
    }
    rule = {
        "apiVersion": "networking.istio.io/v1beta1",
        "kind": "DestinationRule",
        "metadata": {"name": service},
        "spec": {
            "host": service,
            "subsets": [{"name": v, "labels": {"version": v}} for v in ("v1", "v2")],
        },
    }
    route = {
        "apiVersion": "networking.istio.io/v1beta1",
        "kind": "VirtualService",
        "metadata": {"name": service},
        "spec": {
            "hosts": [service],
            "http": [
                {
                    "route": [
                        {"destination": {"host": service, "subset": "v1"}, "weight": 100 - share},
                        {"destination": {"host": service, "subset": "v2"}, "weight": share},
                    ]
                }
            ],
        },
    }
    return [("deployments", deployment), ("destinationrules", rule), ("virtualservices", route)]


def create_canaries(kubeconfig: str, runs: Sequence[Run], share: int) -> None:
    from kubernetes import client

    from canary.cluster import api_client

    api = api_client(kubeconfig)
    apps, custom = client.AppsV1Api(api), client.CustomObjectsApi(api)
    for run in runs:
        for plural, body in canary_objects(run.service, share):
            if plural == "deployments":
                apps.create_namespaced_deployment(NAMESPACE, body)
            else:
                custom.create_namespaced_custom_object(
                    "networking.istio.io", "v1beta1", NAMESPACE, plural, body
                )


class Bursts(threading.Thread):
    """noisy-healthy: each interval of a run's schedule, both its versions get shared error
    and latency factors (Gamma(0.5, 2) and lognormal(0, 0.25)), as in the simulated bench."""

    def __init__(self, box: Any, runs: Sequence[Run], start: float, interval: float, seed: int):
        super().__init__(daemon=True, name="bursts")
        self.box, self.runs, self.start_at, self.interval = box, list(runs), start, interval
        self.rng = np.random.default_rng(seed)
        self.done = threading.Event()

    def run(self) -> None:
        base = self.box.scenario
        overrides: dict[str, Any] = {}
        due = [(self.start_at + r.offset, i) for i, r in enumerate(self.runs)]
        heapq.heapify(due)
        while due and not self.done.is_set():
            at, i = heapq.heappop(due)
            if self.done.wait(max(0.0, at - time.time())):
                return
            errors, latency = self.rng.gamma(0.5, 2.0), self.rng.lognormal(0.0, 0.25)
            burst = dataclasses.replace(
                base.default,
                error_rate=min(1.0, base.default.error_rate * errors),
                latency_median_ms=base.default.latency_median_ms * latency,
                latency_p99_ms=base.default.latency_p99_ms * latency,
            )
            overrides[self.runs[i].canary] = overrides[self.runs[i].stable] = burst
            versions = {**base.versions, **overrides}
            self.box.simulator.scenario = dataclasses.replace(base, versions=versions)
            heapq.heappush(due, (at + self.interval, i))


# --- the bench ----------------------------------------------------------------------------


def plan_runs(names: Sequence[str], count: int, interval: float, seed: int) -> list[Run]:
    chosen = [s for s in sim.SCENARIOS if s.name in names]
    runs = [Run(s, f"{SHORT[s.name]}-{i:02d}", 0.0) for s in chosen for i in range(1, count + 1)]
    random.Random(seed).shuffle(runs)  # schedules spread evenly, scenarios mixed
    for i, run in enumerate(runs):
        run.offset = interval * i / len(runs)
    return runs


def sandbox_groups(runs: Sequence[Run], size: int = SANDBOX_RUNS) -> list[list[Run]]:
    """The runs of each sandbox: one traffic level each, at most ``size`` of them (the
    sandboxes' simulated traffic and metrics then spread over processes)."""
    levels: dict[float, list[Run]] = {}
    for run in runs:
        levels.setdefault(run.scenario.rps, []).append(run)
    return [
        group[i : i + size]
        for _, group in sorted(levels.items(), reverse=True)
        for i in range(0, len(group), size)
    ]


def schedule(runs: Sequence[Run], start: float, interval: float, looks: int) -> Iterator:
    """(time, run, look) in time order."""
    due = [(start + r.offset + interval, i, 1) for i, r in enumerate(runs)]
    heapq.heapify(due)
    while due:
        at, i, k = heapq.heappop(due)
        yield at, runs[i], k
        if k < looks:
            heapq.heappush(due, (at + interval, i, k + 1))


def analyse(runs: Sequence[Run], start: float, setting: Setting) -> None:
    """Every look of every run, as close to its time as the machine allows (each is
    evaluated at its time whenever it runs: its windows do not move)."""
    errors: list[BaseException | None] = []
    workers = setting.workers
    with concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="look") as pool:
        pending: list[concurrent.futures.Future] = []
        for at, run, k in schedule(runs, start, setting.interval, setting.looks):
            wait = at + LAG_S - time.time()
            if wait > 0:
                time.sleep(wait)
            pending.append(pool.submit(look, run, k, setting.looks, at))
            errors += [f.exception() for f in pending if f.done() and f.exception()]
            pending = [f for f in pending if not f.done()]
        concurrent.futures.wait(pending)
        errors += [f.exception() for f in pending if f.exception()]
    if errors:
        raise RuntimeError(f"{len(errors)} looks failed, the first: {errors[0]!r}")


@dataclasses.dataclass(frozen=True)
class Setting:
    """How the runs are analysed: the looks, each run's share on v2, the warm-up."""

    interval: float = sim.INTERVAL_S
    looks: int = sim.LOOKS
    share: int = SHARE
    warmup: float = WARMUP_S
    seed: int = 7  # sandbox i is seeded seed * 100 + i
    workers: int = 6
    sandbox_runs: int = SANDBOX_RUNS  # runs per sandbox (process)


def serve_sandbox(conn: Any, index: int, runs: list[Run], setting: Setting, directory: str) -> None:
    """A child process: one traffic level's sandbox, its canaries and their bursts.

    Sends the sandbox's metrics URL once its Deployments are ready, then waits for the
    analysis' start time (bursts begin then) and for the word to stop.
    """
    from sandbox.emulated import Sandbox

    # The metrics server's complaints (a scrape given up on a busy machine) go to a file.
    sys.stderr = open(Path(directory) / f"sandbox-{index}.log", "w")  # noqa: SIM115
    rps = runs[0].scenario.rps
    try:
        box = Sandbox(
            str(scenario_file(runs, Path(directory), index)),
            seed=setting.seed * 100 + index,
            rps=rps,
            extra_services=[r.service for r in runs],
        ).start()
    except Exception as exc:
        conn.send(f"the sandbox did not start: {exc!r}")
        return
    try:
        create_canaries(str(box.write_kubeconfig(Path(directory) / f"kube-{index}")), runs,
                        setting.share)  # fmt: skip
        ready = box.wait_ready(120)
        conn.send(box.metrics_url if ready else "the sandbox's Deployments did not become ready")
        start = conn.recv()
        noisy = [r for r in runs if r.scenario.noisy]
        bursts = Bursts(box, noisy, start, setting.interval, setting.seed) if noisy else None
        if bursts is not None:
            bursts.start()
        conn.recv()  # stop
        if bursts is not None:
            bursts.done.set()
    except Exception as exc:
        conn.send(f"the sandbox failed: {exc!r}")
    finally:
        box.stop()


def prometheus_facts(prometheus: Any) -> dict[str, Any]:
    """Series in Prometheus's head, and scrapes that failed; None where it did not say."""
    facts: dict[str, Any] = {"series": None, "scrapes": None, "failed_scrapes": None}
    with contextlib.suppress(Exception):
        facts["series"] = prometheus.api("status/tsdb")["headStats"]["numSeries"]
    with contextlib.suppress(Exception):
        facts["scrapes"] = round(prometheus.query_value("sum(count_over_time(up[1h]))"))
        failed = "sum(count_over_time((up == 0)[1h:])) or vector(0)"
        facts["failed_scrapes"] = round(prometheus.query_value(failed))
    return facts


def run_analyses(
    runs: Sequence[Run], specs: Callable[[Run], dict[str, Any]], setting: Setting
) -> dict[str, Any]:
    """Runs every run's analyses in real time: one sandbox per traffic level, each in a
    process of its own (the simulated traffic and its metrics do not wait on the looks),
    one Prometheus scraping them all; ``specs`` gives each run its judges' analysis
    sections. Returns facts about the bench (sandboxes, series, late looks)."""
    import multiprocessing

    from canary.analysis.analyzer import Analyzer
    from canary.analysis.prometheus import PrometheusProvider
    from sandbox.prometheus import PrometheusServer

    groups = sandbox_groups(runs, setting.sandbox_runs)
    facts: dict[str, Any] = {"runs": len(runs), "sandboxes": len(groups)}
    spawn = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="judgement-e2e-") as tmp:
        children = []
        try:
            for index, group in enumerate(groups):
                ours, theirs = spawn.Pipe()
                child = spawn.Process(
                    target=serve_sandbox, args=(theirs, index, group, setting, tmp), daemon=True
                )
                child.start()
                children.append((child, ours))
            urls = [conn.recv() for _, conn in children]
            failed = [u for u in urls if not u.startswith("http://")]
            if failed:
                raise RuntimeError(failed[0])
            with PrometheusServer(urls, scrape_interval=f"{SCRAPE_S:g}s") as prometheus:
                local = threading.local()

                def provider() -> Any:
                    if not hasattr(local, "provider"):
                        local.provider = PrometheusProvider(prometheus.url, timeout=10, retries=2)
                    return local.provider

                for run in runs:
                    shared = OncePerLook(provider)
                    run.analyzers = {
                        judge: Analyzer(
                            spec, shared, NAMESPACE, run.service, run.canary, run.stable,
                            clock=lambda run=run: run.now,
                        )
                        for judge, spec in specs(run).items()
                    }  # fmt: skip
                start = time.time() + setting.warmup
                for _, conn in children:
                    conn.send(start)
                analyse(runs, start, setting)
                facts |= prometheus_facts(prometheus)
        finally:
            for child, conn in children:
                if child.is_alive():
                    with contextlib.suppress(OSError):
                        conn.send("stop")
                child.join(30)
    return facts


# --- the report ---------------------------------------------------------------------------


def e2e_outcome(runs: Sequence[Run], judge: str, interval: float, looks: int) -> sim.Outcome:
    first = np.array([r.rolled_back.get(judge, 0) for r in runs])
    paused = np.array([r.paused.get(judge, False) and judge not in r.rolled_back for r in runs])
    return sim.outcome(first, paused, interval, looks)


def simulated(names: Sequence[str], runs: int, seed: int) -> dict[tuple[str, str], sim.Outcome]:
    """The simulated bench's figures at the documented settings (in another process)."""
    os.nice(5)
    rows = sim.evaluate(
        runs, seed, sim.DOCUMENTED["threshold"], sim.DOCUMENTED["mann-whitney"], names
    )
    return {(s.name, judge): o for s, judge, o in rows}


def report(
    runs: Sequence[Run],
    figures: dict[tuple[str, str], sim.Outcome],
    interval: float,
    looks: int,
) -> str:
    lines = [
        "| scenario | judge | runs | false rollbacks | detected | median s | p90 s | paused "
        "| sim: false rollbacks | detected | median s | paused |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in sim.SCENARIOS:
        mine = [r for r in runs if r.scenario.name == s.name]
        if not mine:
            continue
        for judge in sim.JUDGES:
            e2e = sim.cells(s, e2e_outcome(mine, judge, interval, looks))
            theirs = figures.get((s.name, judge))
            other = ("—",) * 4 if theirs is None else sim.cells(s, theirs)
            other = (other[0], other[1], other[2], other[4])
            row = [s.name, judge, str(len(mine)), *e2e, *other]
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def surprises(runs: Sequence[Run]) -> list[str]:
    """Each false rollback, and each fault the sequential judge missed where its traffic
    sufficed, with the reason."""
    out = []
    for run in runs:
        for judge in sim.JUDGES:
            rolled = judge in run.rolled_back
            if rolled and not run.scenario.faulty:
                out.append(f"{run.service} {judge} rolled back: {run.reasons[judge][:200]}")
        enough = run.scenario.rps > sim.SCENARIOS[-1].rps
        if run.scenario.faulty and enough and "sequential" not in run.rolled_back:
            why = run.reasons.get("sequential", "no rollback, no pause")
            out.append(f"{run.service} sequential missed: {why[:200]}")
    return out


def served(runs: Sequence[Run], interval: float) -> str:
    """The share of the intended requests the sandboxes served, per traffic level (a busy
    machine slows the simulated traffic: it drops what it cannot send in time)."""
    shares: dict[float, list[float]] = {}
    for run in runs:
        last = run.last.get("sequential")
        if last is None or not last.metrics:
            continue
        counted = last.metrics[0].statistic  # the test's totals since the first look
        intended = run.scenario.rps * interval * last.check
        shares.setdefault(run.scenario.rps, []).append(
            (counted["canary_requests"] + counted["stable_requests"]) / intended
        )
    return ", ".join(
        f"{statistics.median(v):.0%} of {rps:g}/s" for rps, v in sorted(shares.items())
    )


def lateness(runs: Sequence[Run]) -> str:
    lags = sorted(lag - LAG_S for run in runs for lag in run.lags)
    if not lags:
        return "no looks"
    return (
        f"looks began {statistics.median(lags):.2f} s (median) and {lags[-1]:.1f} s (at "
        f"most) after their time + {LAG_S:g} s"
    )


def dispersion(runs: Sequence[Run], name: str) -> float | None:
    """Variance over mean of the stable's 5xx per look, over the scenario's runs: about 1
    for steady errors, far above for the shared bursts of noisy-healthy."""
    counts = []
    for run in runs:
        mann_whitney = run.analyzers.get("mann-whitney")
        if run.scenario.name != name or mann_whitney is None:
            continue
        times = mann_whitney._times  # Mann-Whitney keeps every reading of the analysis
        for start, end in itertools.pairwise(times):
            counts.append(mann_whitney._readings.between("stable", start, end).errors)
    mean = float(np.mean(counts)) if counts else 0.0
    return float(np.var(counts)) / mean if mean else None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="runs per scenario (20)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--looks", type=int, default=sim.LOOKS, help="looks per run (60)")
    parser.add_argument("--interval", type=float, default=sim.INTERVAL_S, help="seconds (10)")
    parser.add_argument("--workers", type=int, default=6, help="threads running looks")
    parser.add_argument("--sim-runs", type=int, default=200, help="simulated runs per scenario")
    parser.add_argument(
        "--scenarios",
        default=",".join(s.name for s in sim.SCENARIOS),
        help="comma-separated, of " + ", ".join(s.name for s in sim.SCENARIOS),
    )
    args = parser.parse_args(argv)
    args.scenarios = [n.strip() for n in args.scenarios.split(",") if n.strip()]
    unknown = [n for n in args.scenarios if n not in SHORT]
    if unknown or args.runs < 1 or args.looks < 1 or args.interval < 1:
        parser.error(f"unknown scenario {unknown[0]}" if unknown else "counts must be positive")
    from sandbox.prometheus import find_prometheus_binary

    if find_prometheus_binary() is None:
        sys.exit("judgement_e2e: no Prometheus binary (Debian package 'prometheus')")
    began = time.monotonic()
    setting = Setting(args.interval, args.looks, seed=args.seed, workers=args.workers)
    runs = plan_runs(args.scenarios, args.runs, args.interval, args.seed)
    specs = analysis_specs(args.interval)
    with concurrent.futures.ProcessPoolExecutor(1) as other:
        figures = other.submit(simulated, args.scenarios, args.sim_runs, args.seed)
        facts = run_analyses(runs, lambda run: specs, setting)
        print(report(runs, figures.result(), args.interval, args.looks))
    print()
    for line in surprises(runs):
        print(line)
    healthy, noisy = dispersion(runs, "healthy"), dispersion(runs, "noisy-healthy")
    if healthy is not None and noisy is not None:
        print(f"stable 5xx per look, variance / mean: healthy {healthy:.2f}, noisy {noisy:.2f}")
    print(
        f"\n{facts['runs']} runs x {len(sim.JUDGES)} judges in {facts['sandboxes']} sandboxes, "
        f"one Prometheus ({facts['series']} series, scraped every {SCRAPE_S:g} s, "
        f"{facts['failed_scrapes']} of {facts['scrapes']} scrapes failed); a look every "
        f"{args.interval:g} s, {args.looks} looks; {lateness(runs)}; requests served (median "
        f"run): {served(runs, args.interval)}; simulated: "
        f"{args.sim_runs} runs per scenario, {sim.LOOKS} looks of {sim.INTERVAL_S:g} s; "
        f"seed {args.seed}; {time.monotonic() - began:.0f} s in all"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
