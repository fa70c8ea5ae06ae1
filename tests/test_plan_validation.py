"""Malformed plans are refused with field-level, one-line errors and exit code 2."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from canary.cli import main
from canary.plan import PlanError, load_plan

BAD_PLANS = sorted(Path(__file__).parent.joinpath("bad_plans").glob("*.yaml"))
GOOD_PLANS = sorted(Path("configs").glob("*.yaml"))


def expectation(path: Path) -> str:
    first = path.read_text().splitlines()[0]
    assert first.startswith("# expect: "), f"{path} lacks its '# expect:' line"
    return first.removeprefix("# expect: ")


def canary(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "canary", *args], capture_output=True, text=True, timeout=120
    )


def test_the_corpus_is_large_enough():
    assert len(BAD_PLANS) >= 20


@pytest.mark.parametrize("path", BAD_PLANS, ids=lambda p: p.stem)
def test_each_bad_plan_names_its_field(path: Path):
    with pytest.raises(PlanError) as caught:
        load_plan(path)
    lines = str(caught.value).splitlines()
    assert any(expectation(path) in line for line in lines), lines
    assert all(re.match(rf"{re.escape(str(path))}:\d+: ", line) for line in lines), lines


def test_validate_reports_every_bad_plan_in_one_line_each_and_exits_2():
    result = canary("validate", *map(str, BAD_PLANS))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr + result.stdout
    for path in BAD_PLANS:
        assert f"{path}:" in result.stderr and expectation(path) in result.stderr


@pytest.mark.parametrize("command", ["plan", "run"])
def test_plan_and_run_refuse_every_bad_plan(command: str, capsys):
    for path in BAD_PLANS:
        assert main([command, str(path)]) == 2, path
        err = capsys.readouterr().err
        assert expectation(path) in err and "Traceback" not in err


def test_line_numbers_point_at_the_offending_field(tmp_path: Path):
    plan = tmp_path / "plan.yaml"
    plan.write_text(
        "service: reviews\nstable: {version: v1}\ncanary: {version: v2, image: x}\n"
        "analysis:\n  interval: 10s\n  stepWeights: [10, 5]\n"
    )
    with pytest.raises(PlanError) as caught:
        load_plan(plan)
    assert str(caught.value) == (
        f"{plan}:6: analysis.stepWeights[1]: weights must increase (5 after 10)"
    )


def test_a_missing_file_is_one_line_and_exit_2():
    result = canary("validate", "no/such/plan.yaml")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "no/such/plan.yaml:0: cannot read plan: No such file or directory"
    ]


def test_bad_flags_are_one_line_and_exit_2():
    result = canary("plan", "configs/bookinfo-reviews.yaml", "-o", "json")
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "-o/--output" in result.stderr


@pytest.mark.parametrize("path", GOOD_PLANS, ids=lambda p: p.stem)
def test_shipped_plans_validate(path: Path):
    result = canary("validate", str(path))
    assert result.returncode == 0, result.stderr
