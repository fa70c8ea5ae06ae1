"""`canary approve | reject | abort | status` and `canary approvals serve`.

Errors are one line on stderr: exit 2 for bad input (an unknown run, a run not waiting at
a gate, a refused approver), 1 when the Prefect API cannot be reached.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
import uuid
from collections.abc import Callable
from typing import Any

from canary.arguments import CommandParser
from canary.errors import BadInput
from canary.exit_codes import BAD_INPUT, ERROR

RELEASE_FLOW = "canary-release"


class _Refused(BadInput):
    """Bad input, reported in one line with exit code 2."""


def run_reporting_errors(
    handler: Callable[[argparse.Namespace], int], args: argparse.Namespace
) -> int:
    try:
        return handler(args)
    except BadInput as exc:
        print(f"canary: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("canary: interrupted", file=sys.stderr)
        return ERROR
    except Exception as exc:  # the Prefect API unreachable, and the like
        print(f"canary: {type(exc).__name__}: {_first_line(exc)}", file=sys.stderr)
        return ERROR


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [""])[0]


def parse_run_id(text: str) -> str:
    try:
        return str(uuid.UUID(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a flow run id") from None


def me() -> str:
    return os.environ.get("CANARY_USER") or getpass.getuser()


# --- approve / reject / abort -------------------------------------------------------------


def approve_main(argv: list[str]) -> int:
    return _decision_main("approve", argv)


def reject_main(argv: list[str]) -> int:
    return _decision_main("reject", argv)


def _decision_main(decision: str, argv: list[str]) -> int:
    parser = CommandParser(
        prog=f"canary {decision}", description=f"{decision} a waiting release gate"
    )
    parser.add_argument("run_id", type=parse_run_id, metavar="RUN_ID")
    parser.add_argument("--reason", default="", metavar="R")
    parser.add_argument(
        "--as",
        dest="who",
        default=None,
        metavar="WHO",
        help="who decides: a Slack member id the plan lists (default: $CANARY_USER or $USER)",
    )
    parser.add_argument("--gate", default=None, help="the gate key, e.g. promote (default: any)")
    parser.set_defaults(decision=decision)
    return run_reporting_errors(_decide, parser.parse_args(argv))


def _decide(args: argparse.Namespace) -> int:
    from canary.approvals.decisions import decide
    from canary.approvals.policy import slack_members

    who = args.who or me()
    request = decide(
        args.run_id,
        args.decision,
        who,
        gate=args.gate,
        reason=args.reason,
        members=slack_members(),
    )
    print(f"{request.title}: {request.status} by {who}; run {args.run_id} resumes")
    return 0


def abort_main(argv: list[str]) -> int:
    parser = CommandParser(prog="canary abort", description="stop a release; it rolls back")
    parser.add_argument("run_id", type=parse_run_id, metavar="RUN_ID")
    parser.add_argument("--as", dest="who", default=None, metavar="WHO")
    return run_reporting_errors(_abort, parser.parse_args(argv))


def _abort(args: argparse.Namespace) -> int:
    from canary.approvals.decisions import abort

    abort(args.run_id, args.who or me())
    print(f"abort requested for run {args.run_id}; it rolls back at its next step")
    return 0


# --- status -------------------------------------------------------------------------------


def status_main(argv: list[str]) -> int:
    parser = CommandParser(prog="canary status", description="a release run, or the recent ones")
    parser.add_argument("run_id", nargs="?", type=parse_run_id, metavar="RUN_ID")
    parser.add_argument("-n", "--limit", type=int, default=20, help="runs listed without an id")
    parser.add_argument("--flow", default=RELEASE_FLOW, help=f"flow name (default {RELEASE_FLOW})")
    return run_reporting_errors(_status, parser.parse_args(argv))


def _status(args: argparse.Namespace) -> int:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        if args.run_id is None:
            print(_run_table(client, args.flow, args.limit))
            return 0
        print(_run_status(client, args.run_id))
    return 0


def _run_table(client: Any, flow: str, limit: int) -> str:
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName
    from prefect.client.schemas.sorting import FlowRunSort

    runs = client.read_flow_runs(
        flow_filter=FlowFilter(name=FlowFilterName(any_=[flow])),
        sort=FlowRunSort.EXPECTED_START_TIME_DESC,
        limit=limit,
    )
    if not runs:
        return f"no {flow} runs"
    rows = [("RUN", "STATE", "STARTED", "RELEASE")]
    for run in runs:
        started = f"{run.start_time:%Y-%m-%d %H:%M:%S}" if run.start_time else "-"
        release = str(run.parameters.get("release_id") or _service_of(run) or "-")
        rows.append((str(run.id), run.state.name if run.state else "-", started, release))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )


def _service_of(run: Any) -> str | None:
    plan = run.parameters.get("plan")
    return plan.get("service") if isinstance(plan, dict) else None


def _run_status(client: Any, run_id: str) -> str:
    from prefect.exceptions import ObjectNotFound

    from canary.approvals.pause import paused_gate
    from canary.approvals.store import gate_request

    try:
        run = client.read_flow_run(run_id)
    except ObjectNotFound:
        raise _Refused(f"no flow run {run_id}") from None
    state = run.state
    lines = [f"run      {run.id}  ({run.name})"]
    message = f": {state.message}" if state is not None and state.message else ""
    lines.append(f"state    {state.name if state else '-'}{message}")
    phase, weight = _latest_phase(client, run_id)
    if phase or weight is not None:
        weight_text = "" if weight is None else f"  canary weight {weight}%"
        lines.append(f"phase    {phase or '-'}{weight_text}")
    gate = paused_gate(state)
    request = gate_request(run_id, gate) if gate else None
    if request is not None:
        lines.append(
            f"gate     {request.title}: {request.status}, until {request.deadline:%H:%M:%S} UTC"
            + (f" ({request.note})" if request.note else "")
        )
    lines += _operator_lines(run_id)
    return "\n".join(lines)


def _operator_lines(run_id: str) -> list[str]:
    """An operator's pause in force, and the run a retry retries (canary.control)."""
    from canary.control.state import load_record

    record = load_record(run_id)
    if record is None:
        return []
    lines = []
    if record.paused is not None:
        paused = record.paused
        lines.append(
            f"paused   by {paused.by} at {paused.phase} ({paused.canary_weight} %) since "
            f"{paused.at:%H:%M:%S} UTC"
            + (f", until {paused.until:%H:%M:%S} UTC" if paused.until else "")
        )
    if record.retry_of:
        lines.append(f"retry of {record.retry_of}")
    return lines


def _latest_phase(client: Any, run_id: str) -> tuple[str | None, int | None]:
    """Phase and weight from the run's newest release events (canary.notify.prefect_events)."""
    from canary.notify.prefect_events import release_events

    phase = weight = None
    for event in release_events(client, run_id):
        payload = event.payload
        phase = phase or payload.get("phase")
        if weight is None and payload.get("canary_weight") is not None:
            weight = int(payload["canary_weight"])
        if phase and weight is not None:
            break
    return phase, weight


# --- approvals serve ----------------------------------------------------------------------


def approvals_main(argv: list[str]) -> int:
    parser = CommandParser(prog="canary approvals", description="Slack approvals of release gates")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=CommandParser)
    serve = sub.add_parser("serve", help="receive Slack button clicks and resume runs")
    serve.add_argument("--port", type=int, default=3000)
    serve.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)
    from canary.approvals.listener import serve as serve_listener

    try:
        return serve_listener(args.host, args.port)
    except OSError as exc:
        print(f"canary approvals serve: {exc.strerror or exc}", file=sys.stderr)
        return BAD_INPUT
