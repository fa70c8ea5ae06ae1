"""How fast the sandbox starts, and whether its traffic simulator keeps up on one core.

    python bench/sandbox_speed.py [--rps 200] [--seconds 10]

Prints figures only (targets: API ready under 3 s; the simulator sustains the requested
rate on one core). Pins the whole process to one CPU with ``os.sched_setaffinity`` so the
figures reflect a single core, and reads CPU time from ``time.process_time``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _wait_http(url: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.005)


def startup() -> None:
    imported = time.monotonic()
    from sandbox.emulated import Sandbox

    began = time.monotonic()
    print(f"import sandbox.emulated: {(began - imported) * 1000:7.1f} ms")
    box = Sandbox("healthy", seed=1)
    box.start()
    _wait_http(f"{box.api_url}/healthz")
    api_ready = time.monotonic() - began
    box.wait_ready(timeout=10)
    bookinfo_ready = time.monotonic() - began
    print(f"start -> API ready:      {api_ready * 1000:7.1f} ms  (target < 3000 ms)")
    print(
        f"start -> BookInfo ready: {bookinfo_ready * 1000:7.1f} ms  "
        "(includes the scenario's 0.5 s start-up delay)"
    )
    cpu0, wall0 = time.process_time(), time.monotonic()
    time.sleep(2.0)
    idle = (time.process_time() - cpu0) / (time.monotonic() - wall0)
    print(f"sandbox CPU at 50 rps, no clients: {idle * 100:5.1f} % of one core")
    box.stop()


def simulator(rps: float, seconds: float) -> None:
    from sandbox.emulated import Sandbox

    with Sandbox("healthy", seed=1, rps=rps) as box:
        box.wait_ready(timeout=10)
        sim = box.simulator
        assert sim is not None
        sent0, cpu0, wall0 = sim.sent, time.process_time(), time.monotonic()
        time.sleep(seconds)
        sent, cpu, wall = sim.sent - sent0, time.process_time() - cpu0, time.monotonic() - wall0
    achieved = sent / wall
    verdict = "keeps up" if achieved >= 0.98 * rps else "FALLS BEHIND"
    print(
        f"simulator at {rps:.0f} rps for {wall:.1f} s on one core: {achieved:.1f} rps "
        f"achieved ({verdict}), {cpu:.2f} CPU s used ({cpu / wall * 100:.1f} % of the core)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rps", type=float, default=200.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    cpu = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    print(f"pinned to CPU {cpu}")
    startup()
    simulator(args.rps, args.seconds)


if __name__ == "__main__":
    main()
