"""`canary run` whose SIGTERM is lost, as code that swallows Prefect's TerminationSignal
loses it: `python -m tests.support.lost_sigterm FLAG -- ARGS...`.

Once the file FLAG exists, the signal's trace is made as Python's C handler makes it (its
number written to the wakeup descriptor) and no exception is raised anywhere: only the
release's own termination watch can stop the run.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

from canary import ownership
from canary.cli import main


def lose_a_sigterm_once(flag: Path) -> None:
    while not flag.exists():
        time.sleep(0.02)
    with ownership._live_lock:
        watches = {id(g): g.termination for g in ownership._live.values()}
    for watch in watches.values():
        if watch._pipe is not None:
            os.write(watch._pipe[1], bytes([signal.SIGTERM]))
            print("a SIGTERM was lost", flush=True)


if __name__ == "__main__":
    flag, separator, *args = sys.argv[1:]
    assert separator == "--", "usage: lost_sigterm FLAG -- ARGS..."
    threading.Thread(target=lose_a_sigterm_once, args=(Path(flag),), daemon=True).start()
    sys.exit(main(args))
