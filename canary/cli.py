"""The `canary` command line.

Exit codes: 0 success (promoted), 1 any other error, 2 bad input, 3 rolled back.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

import yaml

from canary.arguments import CommandParser, added_commands
from canary.exit_codes import BAD_INPUT, ERROR
from canary.plan import PlanError, ReleasePlan, load_plan
from canary.plan.model import GATEWAY_API
from canary.planner import Phase, PhaseKind, phases, routing_for

DRY_RUN_ID = "dry-run"


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in _PASS_THROUGH:
        return _PASS_THROUGH[args[0]](args[1:])
    added = added_commands()
    if args and args[0] in added:
        return added[args[0]].load()(args[1:])
    parsed = _parser().parse_args(args)
    try:
        return parsed.handler(parsed)
    except PlanError as exc:
        print(exc, file=sys.stderr)
        return BAD_INPUT
    except KeyboardInterrupt:
        print("canary: interrupted", file=sys.stderr)
        return ERROR


def _parser() -> argparse.ArgumentParser:
    parser = CommandParser(
        prog="canary",
        description="Canary releases on Kubernetes with Istio or the Gateway API.",
        epilog=_more_commands(),
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=CommandParser)

    validate = sub.add_parser("validate", help="check plan files")
    validate.add_argument("plans", nargs="+", metavar="PLAN")
    validate.set_defaults(handler=_validate)

    plan = sub.add_parser("plan", help="show every phase's routing, without a cluster")
    plan.add_argument("plan", metavar="PLAN")
    plan.add_argument("-o", "--output", choices=["yaml", "table"], default="table")
    plan.set_defaults(handler=_plan)

    return parser


# --- validate and plan --------------------------------------------------------------


def _validate(args: argparse.Namespace) -> int:
    failed = False
    for path in args.plans:
        try:
            load_plan(path)
        except PlanError as exc:
            print(exc, file=sys.stderr)
            failed = True
        else:
            print(f"{path}: ok")
    return BAD_INPUT if failed else 0


def _plan(args: argparse.Namespace) -> int:
    plan = load_plan(args.plan)
    if args.output == "yaml":
        print(plan_yaml(plan), end="")
    else:
        print(plan_table(plan))
    return 0


def plan_yaml(plan: ReleasePlan, release_id: str = DRY_RUN_ID) -> str:
    documents = []
    for phase in phases(plan):
        routing = routing_for(plan, phase, release_id)
        documents.append(
            {
                "phase": phase.name,
                "canaryWeight": phase.canary_weight,
                "deployments": deployment_actions(plan, phase),
                **routing.documents(),
            }
        )
    return yaml.safe_dump_all(documents, sort_keys=False, explicit_start=True)


def plan_table(plan: ReleasePlan) -> str:
    """One row per phase: each version's share, the hold, and what changes in the cluster.

    A gateway-api plan's columns are the versions' Services, and a column says which
    Services a phase creates (when missing) or deletes (when the release created them).
    """
    gateway = plan.routing.provider == GATEWAY_API
    stable, canary = (
        (plan.stable_service, plan.canary_service)
        if gateway
        else (plan.stable.version, plan.canary.version)
    )
    rows = [("PHASE", stable, canary, "HOLD", *(["SERVICES"] if gateway else []), "DEPLOYMENTS")]
    services: list[str] = []
    for phase in phases(plan):
        routes = "header match" if phase.kind is PhaseKind.HEADER_ROUTE else ""
        routes = "test header" if phase.kind is PhaseKind.TEST else routes
        share = f"{phase.canary_weight}%" + (f" + {routes}" if routes else "")
        hold = f"{phase.hold:g}s" if phase.hold else "-"
        row = [phase.name, f"{100 - phase.canary_weight}%", share, hold]
        if gateway:
            wanted = routing_for(plan, phase, DRY_RUN_ID).documents()["services"]
            names = [service["metadata"]["name"] for service in wanted]
            row.append("; ".join(service_actions(services, names)) or "-")
            services = names
        row.append("; ".join(deployment_actions(plan, phase)) or "-")
        rows.append(tuple(row))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def service_actions(before: list[str], after: list[str]) -> list[str]:
    created = [f"create {name} if missing" for name in after if name not in before]
    deleted = [f"delete {name} if this release created it" for name in before if name not in after]
    return created + deleted


def deployment_actions(plan: ReleasePlan, phase: Phase) -> list[str]:
    if phase.kind is PhaseKind.DEPLOY:
        source = f"image {plan.canary.image}" if plan.canary.image else "the plan's manifest"
        return [
            f"create {plan.canary_deployment} from {plan.stable_deployment} with {source}",
            f"wait until ready (deadline {plan.timeouts.readiness:g}s)",
        ]
    if phase.kind is PhaseKind.CLEANUP:
        verb = "delete" if plan.cleanup.action == "delete" else "scale to zero"
        delay = f" after {plan.cleanup.delay:g}s" if plan.cleanup.delay else ""
        return [f"{verb} {plan.stable_deployment}{delay}"]
    return []


# --- commands with their own parsers ------------------------------------------------


def _approvals_command(name: str) -> Callable[[list[str]], int]:
    """`canary <name>` from canary.approvals.commands, imported only when run."""

    def run(argv: list[str]) -> int:
        from canary.approvals import commands

        return getattr(commands, f"{name}_main")(argv)

    return run


def _control_command(name: str) -> Callable[[list[str]], int]:
    """`canary <name>` from canary.control.commands (operators' actions), imported only when run."""

    def run(argv: list[str]) -> int:
        from canary.control import commands

        return getattr(commands, f"{name}_main")(argv)

    return run


# Commands with their own argument parsing.
_PASS_THROUGH: dict[str, Callable[[list[str]], int]] = {
    **{
        name: _approvals_command(name)
        for name in ("approvals", "approve", "reject", "abort", "status")
    },
    **{name: _control_command(name) for name in ("pause", "resume", "promote", "retry")},
}


def _more_commands() -> str:
    names = [*_PASS_THROUGH, *sorted(added_commands())]
    return f"more commands: {', '.join(names)} (each with --help)"
