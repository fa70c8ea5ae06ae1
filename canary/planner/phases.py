"""The phases a plan goes through, and how each one splits traffic (for any traffic API)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from canary.plan import HttpMatch, ReleasePlan
from canary.plan.model import StringMatch

MANAGED_ROUTE_PREFIX = "canary-"
TEST_ROUTE = "canary-test"
HEADER_ROUTE = "canary-header"


class PhaseKind(StrEnum):
    ISOLATE = "isolate"
    DEPLOY = "deploy"
    TEST = "test"
    HEADER_ROUTE = "header-route"
    STEP = "step"
    PROMOTE = "promote"
    CLEANUP = "cleanup"


@dataclass(frozen=True)
class Phase:
    name: str
    kind: PhaseKind
    canary_weight: int
    hold: float = 0.0
    step: int | None = None


@dataclass(frozen=True)
class Split:
    """How the split routes send traffic, which match routes go to the canary, and which
    versions keep their destination (subset or Service) ready."""

    canary_weight: int
    match_routes: list[tuple[str, list[HttpMatch]]] = field(default_factory=list)
    keep_stable: bool = True
    keep_canary: bool = True


ROLLBACK_SPLIT = Split(canary_weight=0, keep_canary=False)


def phases(plan: ReleasePlan) -> list[Phase]:
    """Every phase the plan goes through, in order."""
    out = [Phase("isolate", PhaseKind.ISOLATE, 0), Phase("deploy", PhaseKind.DEPLOY, 0)]
    if plan.tests.checks or plan.tests.commands:
        out.append(Phase("test", PhaseKind.TEST, 0))
    if plan.header_route is not None:
        out.append(Phase("header-route", PhaseKind.HEADER_ROUTE, 0, plan.header_route.hold))
    for index, step in enumerate(plan.weighted_steps(), start=1):
        out.append(Phase(f"step-{index}", PhaseKind.STEP, step.weight, plan.hold_of(step), index))
    out.append(Phase("promote", PhaseKind.PROMOTE, 100, plan.promotion.hold))
    out.append(Phase("cleanup", PhaseKind.CLEANUP, 100))
    return out


def phase_named(plan: ReleasePlan, name: str) -> Phase:
    for phase in phases(plan):
        if phase.name == name:
            return phase
    raise KeyError(f"the plan has no phase {name!r}")


def split_of(plan: ReleasePlan, phase: Phase, release_id: str) -> Split:
    if phase.kind is PhaseKind.TEST:
        test_match = HttpMatch(headers={plan.tests.header: StringMatch(exact=release_id)})
        return Split(0, [(TEST_ROUTE, [test_match])])
    if phase.kind is PhaseKind.HEADER_ROUTE and plan.header_route is not None:
        return Split(0, [(HEADER_ROUTE, list(plan.header_route.match))])
    if phase.kind is PhaseKind.CLEANUP:
        return Split(100, keep_stable=False)
    return Split(phase.canary_weight)


def is_managed_route(route: dict) -> bool:
    """A route (Istio http route, HTTPRoute rule) the pipeline added: its name says so."""
    return str(route.get("name", "")).startswith(MANAGED_ROUTE_PREFIX)
