"""Scenario behaviours: sampling, built-ins, YAML files and timed faults."""

from __future__ import annotations

import random
import statistics
from pathlib import Path

import pytest

from sandbox.mesh.scenarios import (
    BASELINE,
    BUILTIN_SCENARIOS,
    VersionBehaviour,
    load_scenario,
)


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[int(q * (len(ordered) - 1))]


def test_sample_fits_median_p99_and_error_rate() -> None:
    behaviour = VersionBehaviour(error_rate=0.1, latency_median_ms=20, latency_p99_ms=360)
    rng = random.Random(1)
    samples = [behaviour.sample(rng) for _ in range(50_000)]
    latencies = [lat for _, lat in samples]
    errors = [s for s, _ in samples if s >= 500]
    assert statistics.median(latencies) == pytest.approx(20, rel=0.05)
    assert quantile(latencies, 0.99) == pytest.approx(360, rel=0.1)
    assert len(errors) / len(samples) == pytest.approx(0.1, abs=0.01)
    assert set(errors) <= {500, 503} and errors.count(500) > errors.count(503)


def test_builtin_scenarios() -> None:
    assert set(BUILTIN_SCENARIOS) >= {"healthy", "faulty", "slow", "unready"}
    healthy = BUILTIN_SCENARIOS["healthy"]
    assert healthy.behaviour("v2") == healthy.behaviour("v1") == BASELINE
    assert 0 < BASELINE.error_rate <= 0.01
    assert BUILTIN_SCENARIOS["faulty"].behaviour("v2").error_rate == pytest.approx(0.10)
    slow = BUILTIN_SCENARIOS["slow"]
    assert slow.behaviour("v2").latency_p99_ms - slow.behaviour("v1").latency_p99_ms == 300
    unready = BUILTIN_SCENARIOS["unready"]
    assert unready.behaviour("v2").never_ready and not unready.behaviour("v1").never_ready
    assert load_scenario("faulty") is BUILTIN_SCENARIOS["faulty"]


def test_yaml_scenario_inherits_default_fields(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(
        "name: my-scenario\n"
        "default: {errorRate: 0.002, latencyMedianMs: 30, latencyP99Ms: 90,"
        " startupDelaySeconds: 2s}\n"
        "versions:\n"
        "  v2: {errorRate: 0.05, latencyP99Ms: 400}\n"
        "  reviews-v3: {neverReady: true}\n"
    )
    scenario = load_scenario(str(path))
    assert scenario.name == "my-scenario"
    assert scenario.behaviour("v1") == VersionBehaviour(0.002, 30, 90, 2.0)
    assert scenario.behaviour("v2") == VersionBehaviour(0.05, 30, 400, 2.0)
    assert scenario.behaviour("v3", workload="reviews-v3").never_ready


def test_timed_fault_starts_after_the_version_is_ready(tmp_path: Path) -> None:
    path = tmp_path / "late.yaml"
    path.write_text("name: late\nversions:\n  v2: {errorRate: 0.1, after: 10s}\n")
    scenario = load_scenario(path)
    assert scenario.behaviour("v2", ready_for_s=3).error_rate == BASELINE.error_rate
    assert scenario.behaviour("v2", ready_for_s=10).error_rate == 0.1
    assert scenario.behaviour("v2").error_rate == 0.1  # without timing: the fault itself


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name: x\ndefault: {errorRate: 2}\n", "default.errorRate"),
        ("name: x\nversions: {v2: {errorRate: lots}}\n", "versions.v2.errorRate"),
        ("name: x\nversions: {v2: {latencyP99: 5}}\n", "versions.v2.latencyP99: unknown field"),
        (
            "name: x\nversions: {v2: {latencyMedianMs: 100, latencyP99Ms: 50}}\n",
            "versions.v2.latencyP99Ms",
        ),
        ("name: x\nversions: {v2: {after: soon}}\n", "versions.v2.after"),
        ("name: x\ndefault: {after: 5s}\n", "default.after: unknown field"),
        ("name: x\nversions: {v2: {neverReady: 1}}\n", "versions.v2.neverReady"),
        ("versions: {}\n", "name"),
        ("name: x\nfaults: {}\n", "faults: unknown field"),
        ("name: x\nversions: [v2]\n", "versions"),
        ("name: [unclosed\n", "not valid YAML"),
    ],
)
def test_bad_file_gives_one_line_error_naming_the_field(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ValueError) as info:
        load_scenario(str(path))
    assert message in str(info.value)
    assert "\n" not in str(info.value)
    assert str(path) in str(info.value)


def test_unknown_scenario_name() -> None:
    with pytest.raises(ValueError, match="not a built-in"):
        load_scenario("no-such-scenario")
