"""The base of every plan model, shared by the plan and the analysis settings."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

from canary.plan_checks import MAX_TEXT


class Model(BaseModel):
    """Strict camelCase models: unknown fields are errors, not silently ignored.

    Strict types: `true` is no weight and "20" no count; no NaN or infinity; no string
    longer than MAX_TEXT (a plan's values go into requests, logs and run parameters).
    """

    model_config = ConfigDict(
        extra="forbid",
        alias_generator=to_camel,
        populate_by_name=True,
        frozen=True,
        strict=True,
        allow_inf_nan=False,
        str_max_length=MAX_TEXT,
    )
