"""The plan a deployment run releases: inline, or a file in the configs directory.

Runs are started from a form: only plans the operators put in place may be read. The
deployment's flow (flows/deployed.py) builds its plan here, and so do the state hooks
(tasks/recovery.py) that rebuild it from the run's parameters in another process.
"""

from __future__ import annotations

import os
from pathlib import Path

from canary.pending import with_canary
from canary.plan import ReleasePlan
from canary.plan_file import PlanError, Problem, load_plan

CONFIGS_ENV = "CANARY_CONFIGS_DIR"


def configs_dir() -> Path:
    return Path(os.environ.get(CONFIGS_ENV, "configs")).resolve()


def resolve_plan(plan: str | ReleasePlan) -> ReleasePlan:
    """The plan given inline, or read from a file that must lie in the configs directory."""
    if isinstance(plan, ReleasePlan):
        return plan
    root = configs_dir()
    for candidate in (Path(plan), root / plan):
        path = candidate.resolve()
        if path.is_relative_to(root) and path.is_file():
            return load_plan(path)
    message = f"no plan file {plan!r} in {root} (plans are read from there only)"
    raise PlanError([Problem(plan, 0, "", message)])


def plan_to_release(
    plan: str | ReleasePlan, version: str | None = None, image: str | None = None
) -> ReleasePlan:
    """The plan, with `version` and `image` in place of its canary when given (PlanError)."""
    return with_canary(resolve_plan(plan), version, image, source=_source(plan))


def _source(plan: str | ReleasePlan) -> str:
    return plan if isinstance(plan, str) else "<inline plan>"
