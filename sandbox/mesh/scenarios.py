"""How each version of the emulated workloads behaves: errors, latency, readiness.

A scenario has a default behaviour, used by every version it does not name, and
per-version overrides; an override inherits every field it does not set from the default.
Versions are looked up by workload name first (e.g. ``reviews-v2``), then by the pod's
``version`` label (e.g. ``v2``).

Built-in scenarios (baseline: 0.1 % errors, median 20 ms, p99 60 ms, ready after 0.5 s):

* ``healthy``: every version behaves like the baseline.
* ``faulty``: v2 answers 5xx to 10 % of requests.
* ``slow``: v2 is slower across the board: median 120 ms, p99 360 ms (300 ms above the
  baseline's): some 6 % of its requests take over 250 ms, next to none of v1's.
* ``unready``: v2's pods never become ready.

A scenario file is YAML::

    name: my-scenario
    description: v2 starts failing 10 s after it becomes ready   # optional
    default: {errorRate: 0.001, latencyMedianMs: 20, latencyP99Ms: 60, startupDelaySeconds: 0.5}
    versions:
      v2: {errorRate: 0.1, after: 10s}

Fields of ``default`` and of each version: ``errorRate`` (share of 5xx answers, 0..1),
``latencyMedianMs``, ``latencyP99Ms`` (latency is lognormal with this median and p99),
``startupDelaySeconds`` (time from pod creation to ready), ``neverReady`` (bool) and, for
versions only, ``after`` (a duration such as ``10s``): the version serves like the default
until it has been ready that long, then with its own error rate and latency. ``after``
never delays readiness itself.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from canary.durations import parse_duration

_Z99 = 2.3263478740408408  # the standard normal's 99th percentile


@dataclass(frozen=True)
class VersionBehaviour:
    error_rate: float = 0.0
    latency_median_ms: float = 20.0
    latency_p99_ms: float = 60.0
    startup_delay_s: float = 0.5
    never_ready: bool = False
    after_s: float = 0.0
    _mu: float = field(init=False, repr=False, compare=False)
    _sigma: float = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check(0.0 <= self.error_rate <= 1.0, "errorRate", "must be between 0 and 1")
        _check(self.latency_median_ms > 0, "latencyMedianMs", "must be positive")
        _check(
            self.latency_p99_ms >= self.latency_median_ms,
            "latencyP99Ms",
            "must not be below latencyMedianMs",
        )
        _check(self.startup_delay_s >= 0, "startupDelaySeconds", "cannot be negative")
        _check(self.after_s >= 0, "after", "cannot be negative")
        mu = math.log(self.latency_median_ms)
        object.__setattr__(self, "_mu", mu)
        object.__setattr__(self, "_sigma", (math.log(self.latency_p99_ms) - mu) / _Z99)

    def sample(self, rng: random.Random) -> tuple[int, float]:
        """One answer: (HTTP status, latency in ms)."""
        latency = math.exp(self._mu + self._sigma * rng.gauss(0.0, 1.0))
        if self.error_rate and rng.random() < self.error_rate:
            # Mostly application errors; a few overloaded-style 503s.
            return (503 if rng.random() < 0.1 else 500), latency
        return 200, latency


def _check(ok: bool, name: str, problem: str) -> None:
    if not ok:
        raise ValueError(f"{name}: {problem}")


BASELINE = VersionBehaviour(
    error_rate=0.001, latency_median_ms=20.0, latency_p99_ms=60.0, startup_delay_s=0.5
)


@dataclass(frozen=True)
class Scenario:
    name: str
    default: VersionBehaviour = BASELINE
    versions: Mapping[str, VersionBehaviour] = field(default_factory=dict)
    description: str = ""

    def behaviour(
        self, version: str, *, workload: str | None = None, ready_for_s: float | None = None
    ) -> VersionBehaviour:
        """The behaviour of a version (or workload).

        With ``ready_for_s`` (seconds since the workload became ready), a version whose
        ``after`` has not yet elapsed serves like the default; without it, timing is ignored.
        """
        found = self.versions.get(workload or "") or self.versions.get(version)
        if found is None:
            return self.default
        if ready_for_s is not None and ready_for_s < found.after_s:
            return replace(
                self.default,
                startup_delay_s=found.startup_delay_s,
                never_ready=found.never_ready,
                after_s=0.0,
            )
        return found


BUILTIN_SCENARIOS: dict[str, Scenario] = {
    "healthy": Scenario("healthy", description="v2 behaves like v1"),
    "faulty": Scenario(
        "faulty",
        versions={"v2": replace(BASELINE, error_rate=0.10)},
        description="v2 answers 5xx to 10% of requests",
    ),
    "slow": Scenario(
        "slow",
        # Slower as a whole, not in a thin tail: a p99 ceiling of 250 ms (at most 1 % of
        # requests slower) is then broken by a share that a short hold's traffic can show.
        versions={"v2": replace(BASELINE, latency_median_ms=120.0, latency_p99_ms=360.0)},
        description="v2 is slower: median 120 ms, p99 360 ms, 300 ms above v1's",
    ),
    "unready": Scenario(
        "unready",
        versions={"v2": replace(BASELINE, never_ready=True)},
        description="v2's pods never become ready",
    ),
}


# YAML field -> (VersionBehaviour field, converter)
def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"expected a number, got {value!r}") from None


_FIELDS: dict[str, tuple[str, Any]] = {
    "errorRate": ("error_rate", _number),
    "latencyMedianMs": ("latency_median_ms", _number),
    "latencyP99Ms": ("latency_p99_ms", _number),
    "startupDelaySeconds": ("startup_delay_s", parse_duration),
    "neverReady": ("never_ready", None),
    "after": ("after_s", parse_duration),
}


def _convert(where: str, key: str, value: Any) -> Any:
    converter = _FIELDS[key][1]
    if converter is None:
        if not isinstance(value, bool):
            raise ValueError(f"{where}.{key}: expected true or false, got {value!r}")
        return value
    if isinstance(value, bool) or value is None:
        raise ValueError(f"{where}.{key}: expected a number, got {value!r}")
    try:
        return converter(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}.{key}: {exc}") from None


def _behaviour(
    where: str, spec: Any, base: VersionBehaviour, allow_after: bool
) -> VersionBehaviour:
    if spec is None:
        spec = {}
    if not isinstance(spec, Mapping):
        raise ValueError(f"{where}: expected a mapping of behaviour fields")
    values = {}
    for key, value in spec.items():
        if key not in _FIELDS or (key == "after" and not allow_after):
            allowed = ", ".join(k for k in _FIELDS if allow_after or k != "after")
            raise ValueError(f"{where}.{key}: unknown field (allowed: {allowed})")
        values[_FIELDS[key][0]] = _convert(where, key, value)
    try:
        return replace(base, **values)
    except ValueError as exc:
        raise ValueError(f"{where}.{exc}") from None


def scenario_from_dict(data: Any, source: str = "scenario") -> Scenario:
    """A scenario from its parsed YAML form; errors are one line naming the field."""
    if not isinstance(data, Mapping):
        raise ValueError(f"{source}: expected a mapping with name, default and versions")
    unknown = set(data) - {"name", "description", "default", "versions"}
    if unknown:
        raise ValueError(
            f"{source}: {sorted(unknown)[0]}: unknown field "
            "(allowed: name, description, default, versions)"
        )
    name = data.get("name")
    if not isinstance(name, str) or not name:
        raise ValueError(f"{source}: name: expected a non-empty string")
    default = _behaviour(f"{source}: default", data.get("default"), BASELINE, False)
    versions = data.get("versions") or {}
    if not isinstance(versions, Mapping):
        raise ValueError(f"{source}: versions: expected a mapping of version to behaviour")
    overrides = {
        str(v): _behaviour(f"{source}: versions.{v}", spec, default, True)
        for v, spec in versions.items()
    }
    return Scenario(name, default, overrides, str(data.get("description") or ""))


def load_scenario(name_or_path: str | Path) -> Scenario:
    """A built-in scenario by name, or one read from a YAML file."""
    if str(name_or_path) in BUILTIN_SCENARIOS:
        return BUILTIN_SCENARIOS[str(name_or_path)]
    path = Path(name_or_path)
    if not path.is_file():
        names = ", ".join(BUILTIN_SCENARIOS)
        raise ValueError(
            f"unknown scenario {str(name_or_path)!r}: not a built-in ({names}) nor a file"
        )
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ValueError(f"{path}: not valid YAML{where}: {problem}") from None
    return scenario_from_dict(data, str(path))
