"""How long `canary demo` takes, wall clock, against a bare Prefect flow measured beside it.

    python bench/demo_speed.py [--pairs 3] [--scenario healthy]

Every run is a fresh process without PREFECT_API_URL, as a first-time user runs it. The
demo keeps its migrated Prefect database in a cache (here a scratch XDG_CACHE_HOME): the
bench runs it once to fill the cache (a fresh clone's first run), then `--pairs` pairs of
(demo, yardstick). The yardstick is a bare flow of seven tasks, run cold the way Prefect
runs any flow the first time: an ephemeral server on a fresh PREFECT_HOME. Pairs are
interleaved so both see the same machine.

Prints each run, the demo's own split (start-up, release, shut-down), medians and the
ratio. Targets: demo median <= 1.25 x the yardstick's, and <= 30 s from the second run on.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_RATIO = 1.25
TARGET_S = 30.0
BARE_FLOW = """
from prefect import flow, task

@task
def phase(index: int) -> int:
    return index

@flow
def seven_tasks() -> None:
    for index in range(7):
        phase(index)

seven_tasks()
"""


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "PREFECT_HOME")}
    return env | {"PREFECT_SERVER_ANALYTICS_ENABLED": "false"} | extra


def demo(scenario: str, cache: Path) -> tuple[float, int, str]:
    began = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "canary", "demo", "--scenario", scenario],
        capture_output=True,
        text=True,
        env=clean_env(XDG_CACHE_HOME=str(cache)),
        timeout=600,
    )
    wall = time.monotonic() - began
    split = re.search(r"^timing\s+(.*)$", done.stdout, re.MULTILINE)
    return wall, done.returncode, split.group(1) if split else "-"


def bare_flow(scratch: Path) -> tuple[float, int]:
    home = Path(tempfile.mkdtemp(prefix="home-", dir=scratch))
    began = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", BARE_FLOW],
        capture_output=True,
        text=True,
        env=clean_env(PREFECT_HOME=str(home)),
        timeout=600,
    )
    return time.monotonic() - began, done.returncode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--scenario", default="healthy")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="demo-speed-") as tmp:
        scratch, cache = Path(tmp), Path(tmp) / "cache"
        wall, code, split = demo(args.scenario, cache)
        print(f"first demo (fills the cache): {wall:5.1f}s  exit {code}  {split}", flush=True)
        demos, bares = [], []
        for index in range(1, args.pairs + 1):
            wall, code, split = demo(args.scenario, cache)
            demos.append(wall)
            print(f"pair {index}: demo {wall:5.1f}s  exit {code}  {split}", flush=True)
            wall, code = bare_flow(scratch)
            bares.append(wall)
            print(f"pair {index}: bare 7-task flow {wall:5.1f}s  exit {code}", flush=True)
    demo_median, bare_median = statistics.median(demos), statistics.median(bares)
    ratio = demo_median / bare_median
    print(f"demo median {demo_median:.1f}s  bare flow median {bare_median:.1f}s")
    print(
        f"ratio {ratio:.2f} (target <= {TARGET_RATIO:g});  demo median "
        f"{'within' if demo_median <= TARGET_S else 'OVER'} {TARGET_S:g}s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
