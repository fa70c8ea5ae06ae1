"""Holds: analysis rounds each interval, rolled back on too many failed rounds.

The hold loop runs on a virtual clock here: its cadence and deadlines are what it decided,
exactly, however busy the machine is.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from canary import hold as hold_loop
from canary.hold import hold
from canary.planner import Phase, PhaseKind
from canary.release import Release
from canary.round_checks import HealthCheckFailed, RoundCheck
from tests.support.clock import FakeClock


@dataclass
class Rounds:
    """The outcome of each coming round (None: pending), in order, and when each ran."""

    clock: FakeClock
    coming: list[bool | None] = field(default_factory=list)
    at: list[float] = field(default_factory=list)
    ending: list[bool] = field(default_factory=list)  # each round: told the hold ends with it
    takes: float = 0.0  # how long each round's checks take

    def check_round(
        self, release: Release, phase: Phase, hold_ending: bool = False
    ) -> list[RoundCheck]:
        self.at.append(self.clock.monotonic() - START)
        self.ending.append(hold_ending)
        self.clock.advance(self.takes)
        outcome = self.coming.pop(0)
        return [
            RoundCheck(
                check="scripted",
                passed=bool(outcome),
                pending=outcome is None,
                detail="as scripted",
            )
        ]


START = 1000.0


@pytest.fixture
def rounds(monkeypatch) -> Iterator[Rounds]:
    """Scripted rounds (the canary's real checks stand aside) on a virtual clock."""
    clock = FakeClock(START)
    scripted = Rounds(clock)
    monkeypatch.setattr(hold_loop, "time", clock)
    monkeypatch.setattr(hold_loop, "check_round", scripted.check_round)
    monkeypatch.setattr(hold_loop, "checkpoint", lambda release: None)
    monkeypatch.setattr(hold_loop, "emit", lambda *args, **kwargs: None)
    monkeypatch.setattr(hold_loop, "publish_analysis", lambda release, phase: None)
    yield scripted


def release_of(fast_plan, **analysis: object) -> Release:
    plan = fast_plan(analysis={"interval": 1, **analysis})
    return Release(plan=plan, release_id="r1")


def step(hold_s: float) -> Phase:
    return Phase("step-1", PhaseKind.STEP, 20, hold_s, 1)


def test_a_hold_runs_a_round_each_interval_until_its_end(rounds, fast_plan):
    rounds.coming.extend([True, True, True])
    hold(release_of(fast_plan), step(2))
    assert rounds.at == [1.0, 2.0]
    assert rounds.coming == [True]


def test_a_failed_round_below_the_threshold_is_tolerated(rounds, fast_plan):
    rounds.coming.extend([False, True])
    hold(release_of(fast_plan, threshold=2, maxFailures=3), step(1))
    assert rounds.coming == []  # the failed last round made the hold go on until a healthy one
    assert rounds.at == [1.0, 2.0]


def test_threshold_failed_rounds_in_a_row_roll_back(rounds, fast_plan):
    rounds.coming.extend([True, False, False, True])
    with pytest.raises(HealthCheckFailed, match="scripted: FAILED"):
        hold(release_of(fast_plan, threshold=2, maxFailures=5), step(5))
    assert rounds.coming == [True]
    assert rounds.at == [1.0, 2.0, 3.0]


def test_max_failures_in_all_roll_back(rounds, fast_plan):
    rounds.coming.extend([False, True, False, True])
    with pytest.raises(HealthCheckFailed, match="unhealthy in 2 of 3 rounds"):
        hold(release_of(fast_plan, threshold=2, maxFailures=2), step(5))


def test_a_zero_hold_checks_once_at_once(rounds, fast_plan):
    rounds.coming.append(True)
    hold(release_of(fast_plan), step(0))
    assert rounds.at == [0.0]


def test_slow_rounds_keep_the_interval_s_cadence(rounds, fast_plan):
    """A round that takes most of its interval must not push the next ones back."""
    rounds.coming.extend([True] * 5)
    rounds.takes = 0.6
    hold(release_of(fast_plan), step(3))
    assert rounds.at == [1.0, 2.0, 3.0]
    assert all(b - a == pytest.approx(1.0) for a, b in itertools.pairwise(rounds.at))


def test_a_round_that_overruns_its_slot_is_followed_at_once_without_a_burst(rounds, fast_plan):
    rounds.coming.extend([True] * 5)
    rounds.takes = 2.5  # longer than two intervals
    hold(release_of(fast_plan), step(4))
    assert rounds.at == [1.0, 3.5]  # the next round at once; no catch-up rounds in between


def test_the_round_at_the_end_of_a_hold_is_told_so(rounds, fast_plan):
    rounds.coming.extend([True, True])
    hold(release_of(fast_plan), step(2))
    assert rounds.ending == [False, True]


def test_rounds_past_the_end_of_a_hold_are_told_it_is_over(rounds, fast_plan):
    rounds.coming.extend([True, False, True])
    hold(release_of(fast_plan, threshold=2, maxFailures=3), step(2))
    assert rounds.at == [1.0, 2.0, 3.0]
    assert rounds.ending == [False, True, True]


def test_an_undecided_analysis_rolls_back_after_its_rounds_past_the_hold(rounds, fast_plan):
    rounds.coming.extend([None] * 5)
    with pytest.raises(HealthCheckFailed, match="analysis undecided 2s past the hold"):
        hold(release_of(fast_plan, threshold=2, maxFailures=2), step(1))
    assert rounds.at == [1.0, 2.0, 3.0]  # at the end, then threshold x interval past it


def test_a_slow_round_at_the_end_of_a_hold_leaves_the_analysis_its_rounds(rounds, fast_plan):
    rounds.coming.extend([None, True])
    rounds.takes = 2.5  # longer than the 2 s the analysis may stay undecided past the hold
    hold(release_of(fast_plan, threshold=2, maxFailures=2), step(1))
    assert rounds.at == [1.0, 3.5]
    assert rounds.coming == []
