"""What an API server does with a CRD's structural OpenAPI schema, for tests: refuse
unknown fields (strict field validation, kubectl's default) and apply the schema's
defaults. The CEL rules (x-kubernetes-validations) need a real API server."""

from __future__ import annotations

import copy
from typing import Any


def strict(schema: Any) -> Any:
    """Refuse unknown fields wherever the schema lists properties and does not preserve them."""
    if isinstance(schema, dict):
        out = {k: strict(v) for k, v in schema.items()}
        if (
            "properties" in out
            and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [strict(v) for v in schema]
    return schema


def with_defaults(value: Any, schema: dict[str, Any]) -> Any:
    """`value` with the schema's defaults filled in where a field is absent, as an API
    server stores it (a default object gets its own fields' defaults too)."""
    if isinstance(value, dict) and "properties" in schema:
        out = dict(value)
        for name, field in schema["properties"].items():
            if name not in out and "default" in field:
                out[name] = copy.deepcopy(field["default"])
            if name in out:
                out[name] = with_defaults(out[name], field)
        return out
    if isinstance(value, list) and "items" in schema:
        return [with_defaults(item, schema["items"]) for item in value]
    return value
