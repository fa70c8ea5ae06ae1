"""Reading plan files, with problems reported as `PLAN:LINE: field.path: message`."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from canary.errors import BadInput
from canary.models import FIELD_MARK
from canary.plan.model import ReleasePlan


@dataclass(frozen=True)
class Problem:
    source: str
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.field}: " if self.field else ""
        return f"{self.source}:{self.line}: {where}{self.message}"


class PlanError(BadInput):
    """A plan that cannot be used; carries one Problem per fault."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


def load_plan(path: str | Path) -> ReleasePlan:
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise PlanError([Problem(source, 0, "", f"cannot read plan: {exc.strerror}")]) from None
    return parse_plan(text, source)


def parse_plan(text: str, source: str = "<plan>") -> ReleasePlan:
    node = _compose(text, source)
    data = yaml.safe_load(text) if node is not None else None
    if not isinstance(data, dict):
        raise PlanError([Problem(source, 1, "", "a plan is a YAML mapping of fields")])
    return plan_from_dict(data, source, node)


def plan_from_dict(
    data: dict[str, Any], source: str = "<plan>", node: yaml.Node | None = None
) -> ReleasePlan:
    try:
        return ReleasePlan.model_validate(data)
    except ValidationError as exc:
        raise PlanError([_problem(err, source, node) for err in exc.errors()]) from None


def _compose(text: str, source: str) -> yaml.Node | None:
    try:
        return yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else 0
        reason = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise PlanError([Problem(source, line, "", f"YAML syntax error: {reason}")]) from None


def _problem(err: dict[str, Any], source: str, root: yaml.Node | None) -> Problem:
    loc = [part for part in err["loc"] if not _is_tag(part)]
    message = err["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if err["type"] == "extra_forbidden":
        message = "unknown field"
    if message.startswith(FIELD_MARK):
        relative, message = message[1:].split(FIELD_MARK, 1)
        loc += _parse_path(relative)
    return Problem(source, _line_of(root, loc), _field_path(loc), message)


def _parse_path(path: str) -> list[str | int]:
    """'steps[2].weight' -> ['steps', 2, 'weight']."""
    parts: list[str | int] = []
    for name, index in re.findall(r"([^.\[\]]+)|\[(\d+)\]", path):
        parts.append(int(index) if index else name)
    return parts


def _is_tag(part: Any) -> bool:
    # pydantic adds the member name of a union or a validator function to locations.
    return isinstance(part, str) and ("[" in part or part.startswith("function-"))


def _field_path(loc: list[Any]) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def _line_of(node: yaml.Node | None, loc: list[Any]) -> int:
    """The line of the deepest YAML node the location reaches (1-based)."""
    line = node.start_mark.line + 1 if node is not None else 1
    for part in loc:
        child = _child(node, part)
        if child is None:
            break
        node = child
        line = node.start_mark.line + 1
    return line


def _child(node: yaml.Node | None, part: Any) -> yaml.Node | None:
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if key.value == str(part):
                # An unknown field is best shown at its key.
                return value if not isinstance(value, yaml.ScalarNode) else key
    if isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
        return node.value[part]
    return None
