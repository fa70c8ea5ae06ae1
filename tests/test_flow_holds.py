"""Holds: analysis rounds each interval, rolled back on too many failed rounds."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator

import pytest

from canary import hold as hold_loop
from canary.hold import hold
from canary.planner import Phase, PhaseKind
from canary.release import Release
from canary.round_checks import HealthCheckFailed, RoundCheck


@pytest.fixture
def verdicts(monkeypatch) -> Iterator[list[bool]]:
    """The outcome of each coming round, in order (the canary's real checks stand aside)."""
    coming: list[bool] = []
    rounds: list[float] = []

    def check_round(release: Release, phase: Phase) -> list[RoundCheck]:
        rounds.append(time.monotonic())
        return [RoundCheck(check="scripted", passed=coming.pop(0), detail="as scripted")]

    monkeypatch.setattr(hold_loop, "check_round", check_round)
    yield coming


def context(fast_plan, **analysis: object) -> Release:
    plan = fast_plan(analysis={"interval": 1, **analysis})
    return Release(plan=plan, release_id="r1")


def step(hold_s: float) -> Phase:
    return Phase("step-1", PhaseKind.STEP, 20, hold_s, 1)


def test_a_hold_runs_a_round_each_interval_until_its_end(verdicts, fast_plan):
    verdicts.extend([True, True, True])
    began = time.monotonic()
    hold(context(fast_plan), step(2))
    assert 2 <= time.monotonic() - began < 3
    assert verdicts == [True]


def test_a_failed_round_below_the_threshold_is_tolerated(verdicts, fast_plan):
    verdicts.extend([False, True])
    hold(context(fast_plan, threshold=2, maxFailures=3), step(1))
    assert verdicts == []  # the failed last round made the hold go on until a healthy one


def test_threshold_failed_rounds_in_a_row_roll_back(verdicts, fast_plan):
    verdicts.extend([True, False, False, True])
    with pytest.raises(HealthCheckFailed, match="scripted: FAILED"):
        hold(context(fast_plan, threshold=2, maxFailures=5), step(5))
    assert verdicts == [True]


def test_max_failures_in_all_roll_back(verdicts, fast_plan):
    verdicts.extend([False, True, False, True])
    with pytest.raises(HealthCheckFailed, match="unhealthy in 2 of 3 rounds"):
        hold(context(fast_plan, threshold=2, maxFailures=2), step(5))


def test_a_zero_hold_checks_once_at_once(verdicts, fast_plan):
    verdicts.append(True)
    began = time.monotonic()
    hold(context(fast_plan), step(0))
    assert time.monotonic() - began < 0.5


def test_slow_rounds_keep_the_interval_s_cadence(monkeypatch, fast_plan):
    """A round that takes most of its interval must not push the next ones back."""
    starts: list[float] = []

    def slow_round(release: Release, phase: Phase) -> list[RoundCheck]:
        starts.append(time.monotonic())
        time.sleep(0.6)
        return [RoundCheck(check="slow", passed=True, detail="slow but healthy")]

    monkeypatch.setattr(hold_loop, "check_round", slow_round)
    began = time.monotonic()
    hold(context(fast_plan), step(3))
    offsets = [round(t - began, 2) for t in starts]
    assert len(starts) == 3, offsets
    assert all(0.9 <= b - a <= 1.25 for a, b in itertools.pairwise(starts)), offsets
