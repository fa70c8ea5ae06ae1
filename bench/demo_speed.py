"""How long `canary demo` takes, wall clock, from start to exit.

    python bench/demo_speed.py [--runs 3] [--scenario healthy]

Each run is a fresh process with a fresh ephemeral Prefect (PREFECT_API_URL and
PREFECT_HOME are removed from its environment), as a first-time user would see it.
Prints each run, the exit code and the release's own duration, then min/median/max.
Target: 30 s or less for the healthy scenario.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time

TARGET_S = 30.0


def one_run(scenario: str) -> tuple[float, int, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "PREFECT_HOME")}
    began = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "canary", "demo", "--scenario", scenario],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    wall = time.monotonic() - began
    release = re.search(r"^duration\s+(\S+)", done.stdout, re.MULTILINE)
    return wall, done.returncode, release.group(1) if release else "-"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--scenario", default="healthy")
    args = parser.parse_args()
    walls = []
    for index in range(1, args.runs + 1):
        wall, code, release = one_run(args.scenario)
        walls.append(wall)
        print(f"run {index}: {wall:5.1f}s wall  exit {code}  release {release}", flush=True)
    verdict = "within" if max(walls) <= TARGET_S else "OVER"
    print(
        f"min {min(walls):.1f}s  median {statistics.median(walls):.1f}s  max {max(walls):.1f}s"
        f"  ({verdict} the {TARGET_S:g}s target)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
