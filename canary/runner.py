"""`canary run PLAN`: run a release against a cluster and report how it ended.

Exit codes: 0 promoted, 3 rolled back, 2 refused before any change (bad plan or
kubeconfig, or another release holds the service), 1 anything else.
Errors are reported in one line; Prefect's own console output is kept out of the way
(its logs still reach the Prefect API).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TextIO

from canary.exit_codes import BAD_INPUT, ERROR, PROMOTED, ROLLED_BACK
from canary.plan import ReleasePlan
from canary.plan_file import PlanError, load_plan

if TYPE_CHECKING:
    from canary.notify import Notifier
    from flows.canary_release import ReleaseResult


def run_command(args: argparse.Namespace) -> int:
    try:
        plan = load_plan(args.plan)
    except PlanError as exc:
        print(exc, file=sys.stderr)
        return BAD_INPUT
    return run_release(
        plan,
        kubeconfig=args.kubeconfig,
        context=args.context,
        mesh_url=args.mesh_url,
        release_id=args.release_id,
        initiator=args.initiator,
        notifiers=plan_notifiers(plan),
        report=getattr(args, "report", None),
    )


def plan_notifiers(plan: ReleasePlan) -> list[Notifier]:
    """The notifiers the plan asks for beyond the console (Slack, when configured)."""
    slack = plan.notifications.slack if plan.notifications else None
    if slack is None:
        return []
    from canary.notify.slack import slack_notifier_from_env

    notifier = slack_notifier_from_env(slack.channel)
    if notifier is None:
        print("canary: Slack is not configured (SLACK_BOT_TOKEN); events go to the console")
        return []
    return [notifier]


def run_release(
    plan: ReleasePlan,
    *,
    kubeconfig: str | None = None,
    context: str | None = None,
    mesh_url: str | None = None,
    release_id: str | None = None,
    initiator: str | None = None,
    out: TextIO | None = None,
    notifiers: Sequence[Notifier] = (),
    before_summary: Callable[[], None] | None = None,
    report: str | None = None,
) -> int:
    """Run the flow, print each transition and a summary; returns the exit code.

    `notifiers` also get the release's events; `before_summary` runs as the flow ends.
    `report` is where the release report goes (markdown, and the plot beside it); by
    default where `canary.report.reporting_to` says, if anywhere.
    """
    from canary.cluster import ClusterConfigError, api_client
    from canary.notify import ConsoleNotifier, notifying
    from canary.report import reporting_to
    from flows import canary_release  # noqa: F401 - sets up Prefect's logging first

    out = out or sys.stdout
    try:
        api_client(kubeconfig, context)
    except ClusterConfigError as exc:
        print(f"canary: {exc}", file=sys.stderr)
        return BAD_INPUT
    quiet_prefect_console()
    console = ConsoleNotifier(stdout=True, stream=out)
    with notifying(console, *notifiers), reporting_to(report) as report_path:
        result, code = _run_flow(plan, kubeconfig, context, mesh_url, release_id, initiator)
    if before_summary is not None:
        before_summary()
    if result is not None:
        print_summary(result, out)
    if report_path is not None and report_path.exists():
        print(f"report    {report_path}  (plot: {report_path.with_suffix('.png')})", file=out)
    return code


def _run_flow(
    plan: ReleasePlan,
    kubeconfig: str | None,
    context: str | None,
    mesh_url: str | None,
    release_id: str | None,
    initiator: str | None,
) -> tuple[ReleaseResult | None, int]:
    from flows.canary_release import ReleaseFailed, ReleaseRolledBack, canary_release
    from tasks.guard import ReleaseRefused

    try:
        result = canary_release(plan, kubeconfig, context, mesh_url, release_id, initiator)
    except ReleaseFailed as exc:
        return exc.result, ERROR
    except ReleaseRolledBack as exc:
        return exc.result, ROLLED_BACK
    except KeyboardInterrupt:
        print("canary: interrupted", file=sys.stderr)
        return None, ERROR
    except ReleaseRefused as exc:  # refused before any change, like a bad plan
        print(f"canary: refused: {exc}", file=sys.stderr)
        return None, BAD_INPUT
    except Exception as exc:
        print(f"canary: error: {_one_line(exc)}", file=sys.stderr)
        return None, ERROR
    return result, PROMOTED


def print_summary(result: ReleaseResult, out: TextIO) -> None:
    print("", file=out)
    print(f"release   {result.release_id}", file=out)
    print(f"outcome   {result.outcome}", file=out)
    print(f"reason    {result.reason}", file=out)
    print(f"duration  {result.duration:.1f}s", file=out)
    for record in result.phases:
        took = (record.finished - record.started).total_seconds() if record.finished else 0.0
        print(
            f"  {record.name:<14} {record.outcome:<10} {took:5.1f}s  "
            f"{result.canary_version} at {record.canary_weight}%",
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


def _one_line(exc: BaseException) -> str:
    from canary.cluster import describe

    return describe(exc)
