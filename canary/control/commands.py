"""`canary pause | resume | promote [--full] | retry RUN`, each with `--as WHO` (recorded).

Errors are one line on stderr, as for `canary approve` (canary.approvals.commands): exit 2
for bad input (a malformed or unknown run, a run not running or not holding, a refused
asker, a request someone else decided first), 1 when the Prefect API cannot be reached.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from canary.approvals.commands import me, parse_run_id, run_reporting_errors
from canary.arguments import CommandParser
from canary.control.state import OperatorAction

if TYPE_CHECKING:
    from canary.control.retry import Retry

_HELP = {
    "pause": "hold a release at its weight; analysis goes on, the hold's countdown waits",
    "resume": "end an operator's pause",
    "promote": "end the current hold now (--full: straight to promote)",
}


def pause_main(argv: list[str]) -> int:
    return _action_main("pause", argv)


def resume_main(argv: list[str]) -> int:
    return _action_main("resume", argv)


def promote_main(argv: list[str]) -> int:
    return _action_main("promote", argv)


def _parser(verb: str, description: str) -> CommandParser:
    parser = CommandParser(prog=f"canary {verb}", description=description)
    parser.add_argument("run_id", type=parse_run_id, metavar="RUN_ID")
    parser.add_argument("--reason", default="", metavar="R", help="recorded with the action")
    parser.add_argument(
        "--as",
        dest="who",
        default=None,
        metavar="WHO",
        help="who acts: a Slack member id the plan lists (default: $CANARY_USER or $USER)",
    )
    return parser


def _action_main(verb: OperatorAction, argv: list[str]) -> int:
    parser = _parser(verb, _HELP[verb])
    if verb == "promote":
        parser.add_argument(
            "--full",
            action="store_true",
            help="skip the remaining steps and go to promote (an approver; four-eyes)",
        )
    args = parser.parse_args(argv)
    args.action = "promote-full" if getattr(args, "full", False) else verb
    return run_reporting_errors(_act, args)


def _act(args: argparse.Namespace) -> int:
    from canary.approvals.policy import slack_members
    from canary.control.requests import request

    done = request(
        args.run_id, args.action, args.who or me(), reason=args.reason, members=slack_members()
    )
    print(done.summary())
    return 0


# --- retry --------------------------------------------------------------------------------


def retry_main(argv: list[str]) -> int:
    parser = _parser("retry", "start a rolled-back release again: same plan, same version")
    parser.add_argument(
        "--report", metavar="PATH", help="a retry run here: write its report there (markdown)"
    )
    return run_reporting_errors(_retry, parser.parse_args(argv))


def _retry(args: argparse.Namespace) -> int:
    from canary.approvals.policy import slack_members
    from canary.control.retry import claim_retry, start_from_deployment

    retry = claim_retry(args.run_id, args.who or me(), args.reason, slack_members())
    if retry.deployment_id is not None:
        new_run = start_from_deployment(retry)
        print(f"retry of run {retry.run_id} by {retry.by}: new run {new_run} of its deployment")
        return 0
    print(f"retry of run {retry.run_id} by {retry.by}: running it here", flush=True)
    return _run_here(retry, args.report)


def _run_here(retry: Retry, report: str | None) -> int:
    """The retry through `canary run` (the flows' command), with the earlier run's plan."""
    from canary.arguments import added_command

    target = retry.target()
    options = {
        "--kubeconfig": target.kubeconfig,
        "--context": target.kube_context,
        "--mesh-url": target.mesh_url,
        "--initiator": retry.initiator,
        "--report": report,
        "--retry-of": retry.run_id,
    }
    with tempfile.TemporaryDirectory(prefix="canary-retry-") as scratch:
        plan_file = Path(scratch) / "plan.yaml"
        data = retry.plan().model_dump(mode="json", by_alias=True, exclude_none=True)
        plan_file.write_text(yaml.safe_dump(data, sort_keys=False))
        argv = [str(plan_file)]
        for flag, value in options.items():
            if value:
                argv += [flag, value]
        return added_command("run")(argv)
