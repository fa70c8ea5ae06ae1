"""Reading plan files, with problems reported as `PLAN:LINE: field.path: message`."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from canary.errors import BadInput
from canary.models import FIELD_MARK
from canary.plan import strict_yaml
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
        with Path(path).open("rb") as file:
            data = file.read(strict_yaml.MAX_BYTES + 1)  # never more, whatever the file is
        text = strict_yaml.decode(data)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise PlanError([Problem(source, 0, "", f"cannot read plan: {reason}")]) from None
    except strict_yaml.YamlRefused as exc:
        raise PlanError([Problem(source, exc.line, exc.field, exc.message)]) from None
    return parse_plan(text, source)


def parse_plan(text: str, source: str = "<plan>") -> ReleasePlan:
    try:
        data, node = strict_yaml.load(text)
    except strict_yaml.YamlRefused as exc:
        raise PlanError([Problem(source, exc.line, exc.field, exc.message)]) from None
    if not isinstance(data, dict):
        raise PlanError([Problem(source, 1, "", "a plan is a YAML mapping of fields")])
    return plan_from_dict(data, source, node)


def plan_from_dict(
    data: dict[str, Any], source: str = "<plan>", node: yaml.Node | None = None
) -> ReleasePlan:
    if node is None and _json_size(data) > strict_yaml.MAX_BYTES:  # a plan not from a file
        message = f"the plan is larger than {strict_yaml.MAX_BYTES >> 20} MiB"
        raise PlanError([Problem(source, 0, "", message)])
    try:
        return ReleasePlan.model_validate(data)
    except ValidationError as exc:
        raise PlanError([_problem(err, source, node) for err in exc.errors()]) from None


def _json_size(data: Any) -> int:
    try:
        return len(json.dumps(data, default=str))
    except (TypeError, ValueError, RecursionError):  # not JSON-like: the model will say so
        return 0


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
    return strict_yaml.field_path(part if isinstance(part, int) else str(part) for part in loc)


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
