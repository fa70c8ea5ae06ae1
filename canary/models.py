"""The base of every plan model, shared by the plan and the analysis settings."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

from canary.field_checks import MAX_TEXT

# A cross-field error names its field inside the message, between two marks; the plan
# loader takes it out and puts it in the problem's field path.
FIELD_MARK = "\u00a7"


def field_error(path: str, message: str) -> ValueError:
    """A cross-field error that names the field it is about, relative to the model."""
    return ValueError(f"{FIELD_MARK}{path}{FIELD_MARK}{message}")


def field_title(name: str, info: Any = None) -> str:
    """A form label from a field's name: `canary_action` -> "Canary action"."""
    return name.replace("_", " ").strip().capitalize()


def model_title(model: type) -> str:
    """A form section's label from a model's name: `NoDataSpec` -> "No data"."""
    words = re.findall(r"[A-Z][a-z0-9]*", model.__name__.removesuffix("Spec"))
    return " ".join(words).capitalize() or model.__name__


def label_every_field(schema: dict[str, Any], model: type[BaseModel]) -> None:
    """Titles for the fields pydantic leaves without one (those holding a model: a $ref)."""
    names = {(field.alias or name): name for name, field in model.model_fields.items()}
    for key, prop in schema.get("properties", {}).items():
        prop.setdefault("title", field_title(names.get(key, key)))


class Model(BaseModel):
    """Strict camelCase models: unknown fields are errors, not silently ignored.

    Their JSON schema (the Prefect UI's forms) labels every field and section in words,
    whatever the camelCase alias.

    Strict types: `true` is no weight and "20" no count; no NaN or infinity; no string
    longer than MAX_TEXT (a plan's values go into requests, logs and run parameters).
    """

    model_config = ConfigDict(
        extra="forbid",
        alias_generator=to_camel,
        populate_by_name=True,
        frozen=True,
        field_title_generator=field_title,
        model_title_generator=model_title,
        json_schema_extra=label_every_field,
        strict=True,
        allow_inf_nan=False,
        str_max_length=MAX_TEXT,
    )
