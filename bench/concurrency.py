"""Twenty releases at once on one worker: overhead per release, and time to rollback.

    python bench/concurrency.py [--runs 3] [--services 20] [--faulty 10] [--prefect postgres|sqlite]

This process is the one worker: it runs every canary-release flow, each in a thread. They
release 20 different services of one sandbox (a `canary sandbox` process: BookInfo's
reviews plus 19 more services, all sent traffic), judged by one Prometheus, recorded by
one Prefect server (PostgreSQL by default, in a throw-away cluster on 127.0.0.1; or SQLite).
The faulty services' v2 turns bad some AFTER_S seconds after it is ready (the scenario's
`after`), each group's onsets spread evenly over one analysis interval: a check every second
makes a time to rollback jump by whole seconds with the onset's place between two checks,
and the spread keeps that from deciding the comparison.

First releases alone (a healthy one, then ten faulty ones one after another), then all 20
together; the whole is run `--runs` times, each in a fresh process, and pooled. Figures:

* overhead: wall time of a promoted release minus the holds its plan asks for;
* time to rollback: from the moment the canary turns bad (the sandbox's ready time + its
  onset) until the VirtualService sends it nothing (read through the API every 100 ms).

Target: the concurrent releases' median time to rollback within 1.2x the lone releases'.
"""

from __future__ import annotations

import argparse
import contextlib
import contextvars
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sandbox.prometheus import free_port  # noqa: E402 - after the path above

AFTER_S = 8.0  # the faulty v2 serves well this long after it is ready, then fails
ANALYSIS_INTERVAL_S = 1.0
ERROR_RATE = 0.3
PG_BIN = Path("/usr/lib/postgresql/15/bin")
TARGET_RATIO = 1.2


# --- infrastructure ------------------------------------------------------------------------


def wait_http(url: str, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not answer at {url} within {timeout:g}s")
        time.sleep(0.2)


@contextlib.contextmanager
def postgres(workdir: Path) -> Iterator[str]:
    """A PostgreSQL cluster of our own on 127.0.0.1 (run as the postgres user if root)."""
    data, port = workdir / "pgdata", free_port()
    data.mkdir()
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_postgres:
        shutil.chown(workdir, "postgres")
        shutil.chown(data, "postgres")
    run = [*as_postgres, str(PG_BIN / "pg_ctl"), "-D", str(data)]
    subprocess.run(
        [
            *as_postgres,
            str(PG_BIN / "initdb"),
            "-D",
            str(data),
            "-U",
            "prefect",
            "--auth=trust",
            "-E",
            "UTF8",
        ],
        check=True,
        capture_output=True,
    )
    options = f"-h 127.0.0.1 -p {port} -k {workdir} -c max_connections=200"
    subprocess.run(
        [*run, "-o", options, "-l", str(workdir / "pg.log"), "-w", "start"],
        check=True,
        capture_output=True,
    )
    try:
        subprocess.run(
            [
                *as_postgres,
                str(PG_BIN / "createdb"),
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
                "-U",
                "prefect",
                "prefect",
            ],
            check=True,
        )
        yield f"postgresql+asyncpg://prefect@127.0.0.1:{port}/prefect"
    finally:
        subprocess.run([*run, "-m", "fast", "stop"], capture_output=True)


@contextlib.contextmanager
def prefect_server(database: str | None, workdir: Path) -> Iterator[str]:
    """A Prefect server on 127.0.0.1; `database` None means its default SQLite."""
    port = free_port()
    env = os.environ | {
        "PREFECT_HOME": str(workdir / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
    }
    if database:
        env["PREFECT_API_DATABASE_CONNECTION_URL"] = database
    log = open(workdir / "prefect-server.log", "wb")  # noqa: SIM115
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "prefect",
            "server",
            "start",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-ui",
            "--no-services",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/api/health", 90, "the Prefect server")
        yield env["PREFECT_API_URL"]
    finally:
        server.terminate()
        server.wait(30)
        log.close()
        locked = (workdir / "prefect-server.log").read_text(errors="replace").count("is locked")
        print(f"Prefect server log: {locked} 'database is locked' errors")


@dataclass
class SandboxProcess:
    kubeconfig: str
    metrics_url: str


@contextlib.contextmanager
def sandbox(
    workdir: Path, services: list[str], onsets: dict[str, float], rps: float
) -> Iterator[SandboxProcess]:
    versions = {f"{s}-v2": {"errorRate": ERROR_RATE, "after": f"{t:g}s"} for s, t in onsets.items()}
    scenario = {"name": "bench", "versions": versions}
    (workdir / "scenario.yaml").write_text(yaml.safe_dump(scenario))
    kubeconfig = workdir / "kubeconfig"
    extra = ",".join(s for s in services if s != "reviews")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "canary",
            "sandbox",
            "--scenario",
            str(workdir / "scenario.yaml"),
            "--extra-services",
            extra,
            "--rps",
            str(rps),
            "--seed",
            "1",
            "--kubeconfig",
            str(kubeconfig),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        lines = {}
        while "kubeconfig" not in lines:
            line = process.stdout.readline()
            if not line:
                raise RuntimeError("the sandbox exited before it was ready")
            key, _, value = line.partition(" ")
            lines[key] = value.strip()
        yield SandboxProcess(str(kubeconfig), lines["metrics"])
    finally:
        process.terminate()
        process.wait(30)


# --- watching the cluster ----------------------------------------------------------------


class Watcher:
    """When each VirtualService's canary weight changed, and when each canary turned ready.

    The weights are polled in a process of its own (`--watch`), so that the load of the
    releases in this one does not delay what it sees. The ready times are the sandbox's own,
    the clock its `after` faults count from. All three processes read the host's monotonic
    clock.
    """

    def __init__(self, kubeconfig: str, services: list[str], onsets: dict[str, float]):
        self.onsets = onsets
        self.ready_at: dict[str, list[float]] = {s: [] for s in services}
        self.weights: dict[str, list[tuple[float, int]]] = {s: [] for s in services}
        self._process = subprocess.Popen(
            [sys.executable, __file__, "--watch", kubeconfig, *services],
            stdout=subprocess.PIPE,
            text=True,
        )
        self._thread = threading.Thread(target=self._read, daemon=True)

    def __enter__(self) -> Watcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._process.terminate()
        self._process.wait(10)
        self._thread.join(5)

    def _read(self) -> None:
        for line in self._process.stdout:
            _, service, weight, at = line.split()
            self.weights[service].append((float(at), int(weight)))

    def read_readiness(self, metrics_url: str) -> None:
        """The sandbox's record of when each canary turned ready (`/debug/readiness`)."""
        url = metrics_url.rsplit("/", 1)[0] + "/debug/readiness"
        with urllib.request.urlopen(url, timeout=10) as answer:
            history = json.load(answer)
        for service in self.ready_at:
            self.ready_at[service] = history.get(f"default/{service}-v2", [])

    def time_to_rollback(self, service: str, started: float) -> float | None:
        ready = next((t for t in self.ready_at[service] if t >= started), None)
        if ready is None:
            return None
        bad = ready + self.onsets[service]
        back = next((t for t, w in self.weights[service] if t >= bad and w == 0), None)
        return None if back is None else back - bad


def watch(kubeconfig: str, services: list[str]) -> None:
    """Print `weight SERVICE W T` lines, polling every 100 ms."""
    from kubernetes import client

    from canary.cluster import api_client

    custom = client.CustomObjectsApi(api_client(kubeconfig))
    weights: dict[str, int] = {}
    while True:
        now = time.monotonic()
        group = ("networking.istio.io", "v1", "default", "virtualservices")
        for vs in custom.list_namespaced_custom_object(*group)["items"]:
            service, weight = vs["metadata"]["name"], canary_share(vs)
            if service in services and weights.get(service) != weight:
                weights[service] = weight
                print(f"weight {service} {weight} {now}", flush=True)
        time.sleep(max(0.0, now + 0.1 - time.monotonic()))


def canary_share(vs: dict[str, Any]) -> int:
    """The v2 weight of the split (unmatched) routes."""
    weight = 0
    for route in vs["spec"].get("http", []):
        for d in route.get("route", []):
            if d["destination"].get("subset") == "v2" and not route.get("match"):
                weight = d.get("weight", 100)
    return weight


# --- releases ----------------------------------------------------------------------------


@dataclass
class Outcome:
    service: str
    faulty: bool
    started: float
    release_id: str = ""
    ended: float = 0.0  # the promoted event, or the rollback's "done" event
    wall: float = 0.0  # until the flow returned (its report published)
    outcome: str = ""
    holds: float = 0.0
    reason: str = ""
    to_rollback: float | None = None
    phases: list[str] = field(default_factory=list)

    @property
    def overhead(self) -> float:
        return self.ended - self.started - self.holds


class EndTimes:
    """A notifier: when each release reached its outcome (before its report is made)."""

    def __init__(self) -> None:
        self.at: dict[str, float] = {}
        self.events: dict[str, list[tuple[float, Any]]] = {}

    def notify(self, event: Any) -> None:
        now = time.monotonic()
        self.events.setdefault(event.identity.release_id, []).append((now, event))
        done = event.kind == "promoted" or (event.kind == "rollback" and event.canary_weight == 0)
        if done:
            self.at.setdefault(event.identity.release_id, now)

    def timeline(self, release_id: str, since: float) -> list[str]:
        return [
            f"    {at - since:+6.2f}s {event.phase or '':<8} {event.kind:<15} {event.message[:90]}"
            for at, event in self.events.get(release_id, [])
            if at >= since - 3
        ]


END_TIMES = EndTimes()


def plan_for(service: str, prometheus_url: str) -> Any:
    from canary.plan import plan_from_dict

    return plan_from_dict(
        {
            "service": service,
            "stable": {"version": "v1"},
            "canary": {"version": "v2", "image": f"example/{service}:v2"},
            "tests": {"port": 9080},
            "analysis": {
                "interval": ANALYSIS_INTERVAL_S,
                "threshold": 2,
                "noData": {"minRequests": 5},
                "prometheus": {"url": prometheus_url, "timeout": 3, "retries": 2},
                "metrics": [
                    {
                        "name": "request-success-rate",
                        # The fault fails 30 %: 95 catches it as fast as 99 would, and a
                        # healthy canary's two stray errors in a 5 s window (98 %) do not.
                        "thresholdRange": {"min": 95},
                        "interval": "5s",
                    },
                ],
            },
            "steps": [{"weight": 20, "hold": "15s"}, {"weight": 50, "hold": "5s"}],
            "timeouts": {"readiness": 60},
        }
    )


def release(service: str, faulty: bool, kubeconfig: str, prometheus_url: str) -> Outcome:
    from canary.planner import phases
    from canary.release import ReleaseTarget
    from flows.canary_release import ReleaseRolledBack, canary_release

    plan = plan_for(service, prometheus_url)
    holds = {p.name: p.hold for p in phases(plan)}
    release_id = f"bench-{service}-{uuid.uuid4().hex[:6]}"
    outcome = Outcome(service, faulty, time.monotonic(), release_id)
    try:
        result = canary_release(plan, ReleaseTarget(kubeconfig=kubeconfig), release_id)
    except ReleaseRolledBack as exc:
        result = exc.result
    outcome.wall = time.monotonic() - outcome.started
    outcome.ended = END_TIMES.at.get(release_id, outcome.started + outcome.wall)
    outcome.outcome, outcome.reason = result.outcome, result.reason
    outcome.phases = [p.name for p in result.phases if p.outcome == "completed"]
    outcome.holds = sum(holds[name] for name in outcome.phases)
    return outcome


def run_together(
    jobs: list[tuple[str, bool]], kubeconfig: str, prometheus_url: str
) -> list[Outcome]:
    def one(job: tuple[str, bool]) -> Outcome:
        return release(job[0], job[1], kubeconfig, prometheus_url)

    with ThreadPoolExecutor(len(jobs)) as pool:
        futures = [pool.submit(contextvars.copy_context().run, one, job) for job in jobs]
        return [f.result() for f in futures]


# --- the benchmark -----------------------------------------------------------------------


def main() -> int:
    if sys.argv[1:2] == ["--watch"]:
        watch(sys.argv[2], sys.argv[3:])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=20)
    parser.add_argument("--faulty", type=int, default=10)
    parser.add_argument("--rps", type=float, default=40.0, help="per service")
    parser.add_argument("--prefect", choices=["postgres", "sqlite"], default="postgres")
    parser.add_argument("--lone", type=int, default=10, help="faulty releases run alone first")
    parser.add_argument(
        "--timeline", action="store_true", help="print each faulty release's events"
    )
    parser.add_argument(
        "--runs", type=int, default=3, help="whole runs, each in a fresh process; pooled at the end"
    )
    parser.add_argument("--results", help=argparse.SUPPRESS)  # one run's figures, as JSON
    args = parser.parse_args()
    if args.results is None:
        return pooled_runs(args.runs)

    services = ["reviews", *(f"svc-{i:02d}" for i in range(1, args.services))]
    faulty = services[1 :: max(1, args.services // max(args.faulty, 1))][: args.faulty]
    lone_ok, lone_bad = "solo-ok", [f"solo-bad-{i}" for i in range(1, args.lone + 1)]
    onsets = spread_onsets(lone_bad) | spread_onsets(faulty)
    workdir = Path(tempfile.mkdtemp(prefix="canary-bench-"))
    os.chmod(workdir, 0o755)
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, workdir, True)
        database = stack.enter_context(postgres(workdir)) if args.prefect == "postgres" else None
        api_url = stack.enter_context(prefect_server(database, workdir))
        os.environ.update(PREFECT_API_URL=api_url, PREFECT_HOME=str(workdir / "prefect"))
        box = stack.enter_context(
            sandbox(workdir, [*services, lone_ok, *lone_bad], onsets, args.rps)
        )
        from sandbox.prometheus import PrometheusServer

        # Scraped twice a second: a fault shows in the metrics within a second or so.
        prometheus = stack.enter_context(PrometheusServer([box.metrics_url], "500ms"))
        from flows import canary_release  # noqa: F401 - Prefect's logging first
        from flows.command import quiet_prefect_console

        quiet_prefect_console()
        from canary.notify import notifying

        stack.enter_context(notifying(END_TIMES))
        stack.callback(flush_prefect_logs)  # before the server stops
        watched = [*services, lone_ok, *lone_bad]
        watcher = stack.enter_context(Watcher(box.kubeconfig, watched, onsets))
        print(f"prefect on {args.prefect}; {len(services)} services, faulty: {faulty}", flush=True)
        # Each lone faulty release has a service of its own: a service's earlier canary
        # would still be in the metrics window of the next one.
        alone = [lone_ok, *lone_bad]
        lone = [release(s, s in lone_bad, box.kubeconfig, prometheus.url) for s in alone]
        jobs = [(s, s in faulty) for s in services]
        began = time.monotonic()
        together = run_together(jobs, box.kubeconfig, prometheus.url)
        batch_wall = time.monotonic() - began
        time.sleep(0.3)  # the watcher's last reads
        watcher.read_readiness(box.metrics_url)
        for outcome in [*lone, *together]:
            if outcome.faulty:
                outcome.to_rollback = watcher.time_to_rollback(outcome.service, outcome.started)
        report(lone, together, batch_wall, args.prefect)
        if args.timeline:
            timelines(lone + together, watcher)
    Path(args.results).write_text(json.dumps(figures(lone, together)))
    return 0


def figures(lone: list[Outcome], together: list[Outcome]) -> dict[str, list[float]]:
    def backs(group: list[Outcome]) -> list[float]:
        return [o.to_rollback for o in group if o.faulty and o.to_rollback is not None]

    def overheads(group: list[Outcome]) -> list[float]:
        return [o.overhead for o in group if o.outcome == "promoted"]

    return {
        "lone_backs": backs(lone),
        "together_backs": backs(together),
        "lone_overheads": overheads(lone),
        "together_overheads": overheads(together),
    }


def pooled_runs(runs: int) -> int:
    """Run the benchmark `runs` times, each in a process of its own, then pool the figures.

    One run's median time to rollback moves by a few tenths of a second with where the
    random errors fall between scrapes; pooled runs say what concurrency itself costs.
    """
    passed = [a for a in sys.argv[1:] if not a.startswith("--runs")]
    pooled: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="canary-bench-runs-") as tmp:
        for run in range(1, runs + 1):
            print(f"\n=== run {run} of {runs}", flush=True)
            out = Path(tmp) / f"run-{run}.json"
            subprocess.run([sys.executable, __file__, *passed, "--results", str(out)], check=True)
            for key, values in json.loads(out.read_text()).items():
                pooled.setdefault(key, []).extend(values)
    lone, together = pooled["lone_backs"], pooled["together_backs"]
    ratio = statistics.median(together) / statistics.median(lone)
    verdict = "within" if ratio <= TARGET_RATIO else "OVER"
    print(f"\n=== {runs} runs pooled")
    print(
        f"overhead: alone median {statistics.median(pooled['lone_overheads']):.2f}s; "
        f"at once median {statistics.median(pooled['together_overheads']):.2f}s, "
        f"max {max(pooled['together_overheads']):.2f}s"
    )
    print(
        f"time to rollback: alone median {statistics.median(lone):.2f}s ({len(lone)} releases), "
        f"at once median {statistics.median(together):.2f}s ({len(together)} releases), "
        f"max {max(together):.2f}s; ratio of medians {ratio:.2f} "
        f"({verdict} the {TARGET_RATIO}x target)"
    )
    return 0


def spread_onsets(services: list[str]) -> dict[str, float]:
    """AFTER_S plus k/n of an analysis interval for the k-th of n services."""
    n = max(len(services), 1)
    return {s: AFTER_S + ANALYSIS_INTERVAL_S * k / n for k, s in enumerate(services)}


def timelines(outcomes: list[Outcome], watcher: Watcher) -> None:
    """Each faulty release's events, in seconds from the moment its canary turned bad."""
    for o in (o for o in outcomes if o.faulty):
        ready = next((t for t in watcher.ready_at[o.service] if t >= o.started), None)
        if ready is not None:
            print(f"\n{o.service} ({o.release_id}), from the canary turning bad:")
            print("\n".join(END_TIMES.timeline(o.release_id, ready + watcher.onsets[o.service])))


def flush_prefect_logs() -> None:
    from prefect.logging.handlers import APILogHandler

    APILogHandler().flush()


def report(lone: list[Outcome], together: list[Outcome], batch_wall: float, db: str) -> None:
    print(
        f"\n{'release':<22} {'outcome':<12} {'holds':>6} {'to outcome':>11} {'overhead':>9} "
        f"{'+report':>8} {'to rollback':>12}"
    )
    at_once = f"{len(together)} at once"
    for label, group in (("alone", lone), (at_once, together)):
        for o in group:
            back = f"{o.to_rollback:.2f}s" if o.to_rollback is not None else "-"
            overhead = f"{o.overhead:.2f}s" if o.outcome == "promoted" else "-"
            name = f"{o.service} ({label})"
            to_outcome, publish = o.ended - o.started, o.started + o.wall - o.ended
            print(
                f"{name:<22} {o.outcome:<12} {o.holds:5.0f}s {to_outcome:10.1f}s {overhead:>9} "
                f"{publish:7.1f}s {back:>12}"
            )
    for o in (o for o in together if (o.outcome == "promoted") == o.faulty):
        print(f"UNEXPECTED: {o.service} {o.outcome}: {o.reason}")
    promoted = [o.overhead for o in together if o.outcome == "promoted"]
    backs = [o.to_rollback for o in together if o.faulty and o.to_rollback is not None]
    lone_ok = next(o for o in lone if not o.faulty)
    lone_backs = [o.to_rollback for o in lone if o.faulty and o.to_rollback is not None]
    print(f"\nPrefect database: {db}; the {at_once} took {batch_wall:.1f}s in all")
    print(
        f"overhead (start to outcome, minus holds): alone {lone_ok.overhead:.2f}s; {at_once}: "
        f"median {statistics.median(promoted):.2f}s, max {max(promoted):.2f}s"
    )
    if backs and lone_backs:
        lone_back = statistics.median(lone_backs)
        ratio = statistics.median(backs) / lone_back
        verdict = "within" if ratio <= TARGET_RATIO else "OVER"
        print(
            f"time to rollback: alone median {lone_back:.2f}s ({len(lone_backs)} runs); "
            f"{at_once}: median {statistics.median(backs):.2f}s, max {max(backs):.2f}s; "
            f"ratio of medians {ratio:.2f} ({verdict} the {TARGET_RATIO}x target)"
        )


if __name__ == "__main__":
    sys.exit(main())
