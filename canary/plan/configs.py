"""The plans operators put in place: files in the configs directory.

Runs started from a form may name only these (or give the plan inline). The deployment's
flow builds its plan here, and so do the state hooks that rebuild it from a run's
parameters in another process, so both build the same release.
"""

from __future__ import annotations

import os
from pathlib import Path

from canary.plan.loading import PlanError, Problem, load_plan
from canary.plan.model import ReleasePlan
from canary.plan.versions import with_canary

CONFIGS_ENV = "CANARY_CONFIGS_DIR"
PLAN_SUFFIXES = (".yaml", ".yml")


def configs_dir() -> Path:
    return Path(os.environ.get(CONFIGS_ENV, "configs")).resolve()


def plan_files(directory: Path) -> list[Path]:
    """The plan files of a directory, by name."""
    return sorted(p for p in directory.iterdir() if p.suffix in PLAN_SUFFIXES)


def plan_names() -> list[str]:
    """The plan files in the configs directory, named as a run names them; none if absent."""
    root = configs_dir()
    return [p.name for p in plan_files(root)] if root.is_dir() else []


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
