"""`canary run PLAN`: run a release against a cluster and report how it ended.

Exit codes: 0 promoted, 3 rolled back, 2 refused before any change (bad plan or
kubeconfig, or another release holds the service), 1 anything else.
Errors are reported in one line; Prefect's own console output is kept out of the way
(its logs still reach the Prefect API). The command comes to `canary` through the entry
point group `canary.commands`: the library (canary/) never imports the flows.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import TextIO

from canary.arguments import CommandParser
from canary.errors import BadInput, CanaryError, reason_of
from canary.exit_codes import ERROR, PROMOTED, ROLLED_BACK
from canary.notify import ConsoleNotifier, Notifier, notifying
from canary.plan import ReleasePlan, load_plan
from canary.release import ReleaseResult, ReleaseTarget
from canary.report.publishing import reporting_to


def run_main(argv: Sequence[str]) -> int:
    args = _parser().parse_args(argv)
    try:
        plan = load_plan(args.plan)
    except CanaryError as exc:
        print(exc, file=sys.stderr)
        return exc.exit_code
    target = ReleaseTarget(
        kubeconfig=args.kubeconfig, kube_context=args.context, mesh_url=args.mesh_url
    )
    return run_release(
        plan,
        target,
        release_id=args.release_id,
        initiator=args.initiator,
        report=args.report,
        retry_of=args.retry_of,
    )


def _parser() -> argparse.ArgumentParser:
    parser = CommandParser(
        prog="canary run", description="run a release against the cluster the kubeconfig names"
    )
    parser.add_argument("plan", metavar="PLAN")
    parser.add_argument("--kubeconfig", metavar="FILE", help="default: $KUBECONFIG or in-cluster")
    parser.add_argument("--context", metavar="NAME", help="kubeconfig context to use")
    parser.add_argument("--mesh-url", metavar="URL", help="where test checks are sent")
    parser.add_argument("--release-id", metavar="ID", help="default: the flow run id")
    parser.add_argument(
        "--initiator",
        metavar="SLACK_ID",
        default=os.environ.get("CANARY_INITIATOR"),
        help="who starts the release, for four-eyes gates (default: $CANARY_INITIATOR)",
    )
    parser.add_argument(
        "--report", metavar="PATH", help="write the release report there (markdown; PNG beside)"
    )
    parser.add_argument(
        "--retry-of", metavar="RUN_ID", help="the rolled-back run this retries (canary retry)"
    )
    return parser


def run_release(
    plan: ReleasePlan,
    target: ReleaseTarget,
    *,
    release_id: str | None = None,
    initiator: str | None = None,
    out: TextIO | None = None,
    watchers: Sequence[Notifier] = (),
    before_summary: Callable[[], None] | None = None,
    report: str | None = None,
    retry_of: str | None = None,
) -> int:
    """Run the flow, print each transition and a summary; returns the exit code.

    Beside everything a release reports to (canary.wiring), its events are printed to
    `out` and sent to `watchers`; `before_summary` runs as the flow ends. `report` is
    where the release report goes (markdown, and the plot beside it).
    """
    from flows import canary_release  # noqa: F401 - sets up Prefect's logging first

    out = out or sys.stdout
    try:
        api = target.api_client()
    except CanaryError as exc:
        print(f"canary: {exc}", file=sys.stderr)
        return exc.exit_code
    # Said at once: an API server that does not answer takes a while to give up on.
    print(f"connecting to {api.configuration.host}", file=out, flush=True)
    quiet_prefect_console()
    console = ConsoleNotifier(stdout=True, stream=out)
    with notifying(console, *watchers), reporting_to(report) as report_path:
        result, code = _run_flow(plan, target, release_id, initiator, retry_of)
    if before_summary is not None:
        before_summary()
    if result is not None:
        print_summary(result, out)
    if report_path is not None and report_path.exists():
        print(f"report    {report_path}  (plot: {report_path.with_suffix('.png')})", file=out)
    return code


def _run_flow(
    plan: ReleasePlan,
    target: ReleaseTarget,
    release_id: str | None,
    initiator: str | None,
    retry_of: str | None = None,
) -> tuple[ReleaseResult | None, int]:
    from flows.canary_release import ReleaseFailed, ReleaseRolledBack, canary_release

    try:
        result = canary_release(plan, target, release_id, initiator, retry_of)
    except ReleaseFailed as exc:
        return exc.result, ERROR
    except ReleaseRolledBack as exc:
        return exc.result, ROLLED_BACK
    except KeyboardInterrupt:
        print("canary: interrupted", file=sys.stderr)
        return None, ERROR
    except BadInput as exc:  # refused before any change, like a bad plan
        print(f"canary: refused: {exc.reason}", file=sys.stderr)
        return None, exc.exit_code
    except Exception as exc:
        print(f"canary: error: {reason_of(exc)}", file=sys.stderr)
        return None, ERROR
    return result, PROMOTED


def print_summary(result: ReleaseResult, out: TextIO) -> None:
    print("", file=out)
    print(f"release   {result.identity.release_id}", file=out)
    print(f"outcome   {result.outcome}", file=out)
    print(f"reason    {result.reason}", file=out)
    print(f"duration  {result.duration:.1f}s", file=out)
    for record in result.phases:
        print(
            f"  {record.name:<14} {record.outcome:<10} {record.seconds or 0.0:5.1f}s  "
            f"{result.identity.canary_version} at {record.canary_weight}%",
            file=out,
        )


def quiet_prefect_console() -> None:
    """Keep Prefect's console lines (and any traceback) off the terminal."""
    for handler in logging.getLogger().handlers:
        if type(handler).__name__ == "PrefectConsoleHandler":
            handler.addFilter(_OneLineNonPrefect())


class _OneLineNonPrefect(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith("prefect"):
            return False
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        return True
