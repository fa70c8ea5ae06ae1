"""Durations as plans write them ("30s", "1m30s", "500ms", or a number of seconds)."""

from __future__ import annotations

import math
import re
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, PlainSerializer, WithJsonSchema

_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
# No duration of a release is longer than a week: a plan saying more is a mistake
# (1e30 seconds would hold a release for ever, and never roll it back).
MAX_SECONDS = 7 * 24 * 3600.0


def parse_duration(value: object) -> float:
    """Seconds from a duration; raises ValueError with the accepted forms."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30s, 1m or 500ms")
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise ValueError("a duration must be a finite number of seconds")
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return _at_most_a_week(float(value))
    if not isinstance(value, str):
        raise ValueError("expected a duration such as 30s, 1m or 500ms")
    text = value.strip()
    parts = _PART.findall(text)
    if not text or len(text) > 64 or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"{value!r} is not a duration; use forms such as 30s, 1m30s or 500ms")
    return _at_most_a_week(sum(float(n) * _UNIT_SECONDS[u] for n, u in parts))


def _at_most_a_week(seconds: float) -> float:
    if seconds > MAX_SECONDS:
        raise ValueError(f"must be at most {format_duration(MAX_SECONDS)} (a week)")
    return seconds


def format_duration(seconds: float) -> str:
    """The shortest whole-unit form, as PromQL range selectors want it."""
    millis = round(seconds * 1000)
    if millis % 3_600_000 == 0 and millis:
        return f"{millis // 3_600_000}h"
    if millis % 60_000 == 0 and millis:
        return f"{millis // 60_000}m"
    if millis % 1000 == 0:
        return f"{millis // 1000}s"
    return f"{millis}ms"


# What JSON Schema readers (Prefect's parameter form and its server-side check) accept: the
# forms a plan file accepts, not only the float the model holds.
DURATION_SCHEMA = {
    "anyOf": [
        {"type": "number", "minimum": 0, "maximum": MAX_SECONDS},
        {"type": "string", "pattern": r"^(\d+(\.\d+)?(ms|s|m|h))+$"},
    ],
    "description": "Seconds, or a duration such as 30s, 1m30s or 500ms.",
}

Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema(DURATION_SCHEMA),
]


def duration_between(low: float, high: float = MAX_SECONDS) -> Any:
    """A Duration of at least `low` and at most `high` seconds."""

    def check(seconds: float) -> float:
        if seconds < low:
            raise ValueError(f"must be at least {format_duration(low)}")
        if seconds > high:
            raise ValueError(f"must be at most {format_duration(high)}")
        return seconds

    return Annotated[Duration, AfterValidator(check)]
