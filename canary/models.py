"""The base of every plan model, shared by the plan and the analysis settings."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

# A cross-field error names its field inside the message, between two marks; the plan
# loader takes it out and puts it in the problem's field path.
FIELD_MARK = "\u00a7"


def field_error(path: str, message: str) -> ValueError:
    """A cross-field error that names the field it is about, relative to the model."""
    return ValueError(f"{FIELD_MARK}{path}{FIELD_MARK}{message}")


class Model(BaseModel):
    """Strict camelCase models: unknown fields are errors, not silently ignored."""

    model_config = ConfigDict(
        extra="forbid", alias_generator=to_camel, populate_by_name=True, frozen=True
    )
