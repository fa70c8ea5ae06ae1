"""The BookInfo plan, mutated at random: every outcome is a clean refusal or a plan to show.

A clean refusal is a PlanError whose problems are one line each and name the field (or,
for text that is not YAML, the line). A plan that is accepted must be one `canary plan`
can show: its table and its YAML render without an error.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from canary.cli import plan_table, plan_yaml
from canary.plan import PlanError, ReleasePlan, parse_plan, plan_from_dict

BOOKINFO = yaml.safe_load(Path("configs/bookinfo-reviews.yaml").read_text())

SETTINGS = settings(
    max_examples=300,
    deadline=None,
    derandomize=True,  # the same cases on every run: a failure is reproduced by rerunning
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**40), max_value=10**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["", "0s", "1e30", "v1", "reviews", "reviews..default", "BAD IMAGE::@@"]),
    st.sampled_from(["(jason", ".*", "}", "{{ interval }}", "sum(up)}", "U024BE7LH", "-1"]),
    st.text(max_size=30),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=8,
)
KEYS = ["version", "image", "weight", "hold", "match", "headers", "name", "before", "min"]


def paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every place in the document: mapping keys and list indices, depth first."""
    found = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            found += paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += paths(value, (*prefix, index))
    return found


def parent_of(document: Any, path: tuple) -> Any:
    for part in path[:-1]:
        document = document[part]
    return document


@st.composite
def mutated_plans(draw: st.DrawFn) -> dict[str, Any]:
    plan = copy.deepcopy(BOOKINFO)
    for _ in range(draw(st.integers(1, 3))):
        places = paths(plan)
        path = draw(st.sampled_from(places))
        parent, last = parent_of(plan, path), path[-1]
        action = draw(st.sampled_from(["replace", "delete", "add", "repeat"]))
        if action == "replace":
            parent[last] = draw(values)
        elif action == "delete":
            del parent[last]
        elif action == "add" and isinstance(parent, dict):
            parent[draw(st.sampled_from(KEYS) | st.text(max_size=8))] = draw(values)
        elif isinstance(parent, list):
            parent.append(copy.deepcopy(parent[last]))
        if not isinstance(plan, dict) or not plan:
            break
    return plan


# Problems of the text as a whole, which no field can be named for.
WHOLE_TEXT = ("YAML syntax error: ", "a plan is a YAML mapping", "nested deeper than")


class _NoAliases(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True  # one object drawn twice is written out twice, as a person would


def as_yaml(data: Any) -> str:
    return yaml.dump(data, Dumper=_NoAliases, sort_keys=False)


def assert_clean(outcome: ReleasePlan | PlanError, *, text_edit: bool = False) -> None:
    if isinstance(outcome, ReleasePlan):
        assert plan_table(outcome).startswith("PHASE")
        assert plan_yaml(outcome).startswith("---")
        return
    assert outcome.problems
    for problem in outcome.problems:
        line = str(problem)
        assert "\n" not in line and "Traceback" not in line, line
        # An edit of the text may break the document itself: then the line says where.
        named = problem.field or (text_edit and problem.line >= 1)
        assert named or problem.message.startswith(WHOLE_TEXT), line


def outcome_of(text: str) -> ReleasePlan | PlanError:
    try:
        return parse_plan(text, "bookinfo.yaml")
    except PlanError as exc:
        return exc


@SETTINGS
@given(mutated_plans())
def test_a_mutated_plan_is_refused_by_field_or_shown(data: dict[str, Any]):
    assert_clean(outcome_of(as_yaml(data)))


@SETTINGS
@given(mutated_plans())
def test_the_same_plan_given_as_a_dict_gets_the_same_verdict(data: dict[str, Any]):
    from_file = outcome_of(as_yaml(data))
    try:
        from_dict: ReleasePlan | PlanError = plan_from_dict(data, "bookinfo.yaml")
    except PlanError as exc:
        from_dict = exc
    assert type(from_dict) is type(from_file)
    if isinstance(from_dict, PlanError):
        assert [p.field for p in from_dict.problems] == [p.field for p in from_file.problems]


@SETTINGS
@given(st.data())
def test_text_edits_are_refused_by_line_or_field_or_shown(data: st.DataObject):
    text = Path("configs/bookinfo-reviews.yaml").read_text()
    at = data.draw(st.integers(0, len(text)))
    cut = data.draw(st.integers(0, 20))
    insert = data.draw(st.sampled_from(["", "&a ", "*a", "!!str ", ": ", "- ", "{", "\t", "\x00"]))
    insert += data.draw(st.text(max_size=10))
    assert_clean(outcome_of(text[:at] + insert + text[at + cut :]), text_edit=True)


def test_the_mutations_reach_both_outcomes():
    # Guards the strategies themselves: mutations that were all refused (or all accepted)
    # would test little.
    accepted = refused = 0
    for value in (20, True, 1e30, "20", math.nan):
        data = copy.deepcopy(BOOKINFO)
        data["analysis"]["stepWeights"] = [value]
        outcome = outcome_of(json.dumps(data))
        accepted += isinstance(outcome, ReleasePlan)
        refused += isinstance(outcome, PlanError)
    assert (accepted, refused) == (1, 4)
