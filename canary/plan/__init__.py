"""Release plans: the model (`model`), reading files (`loading`), the configs directory
(`configs`) and releasing another version than the plan's canary (`versions`)."""

from canary.plan.loading import PlanError, Problem, load_plan, parse_plan, plan_from_dict
from canary.plan.model import (
    AnalysisSpec,
    CanarySpec,
    CommandCheck,
    HttpCheck,
    HttpMatch,
    ReleasePlan,
    StableSpec,
    Step,
)

__all__ = [
    "AnalysisSpec",
    "CanarySpec",
    "CommandCheck",
    "HttpCheck",
    "HttpMatch",
    "PlanError",
    "Problem",
    "ReleasePlan",
    "StableSpec",
    "Step",
    "load_plan",
    "parse_plan",
    "plan_from_dict",
]
