"""Validation of objects against Kubernetes structural schemas, with Kubernetes' errors.

A structural schema is the OpenAPI v3 dialect of CustomResourceDefinitions. It is checked
here with ``jsonschema`` after translating the Kubernetes extensions:

* an object schema without ``x-kubernetes-preserve-unknown-fields`` accepts only the
  fields it declares (``additionalProperties: false``);
* ``nullable: true`` also accepts ``null``;
* ``x-kubernetes-int-or-string`` accepts an integer or a string;
* ``x-kubernetes-list-type: set`` demands unique items, ``map`` unique map keys;
* ``x-kubernetes-validations`` (CEL): the rules that Istio's networking schemas use are
  evaluated (durations, wildcard and empty-key checks); other rules are skipped;
* ``x-sandbox-checks``: rules a schema written here states as Python predicates
  (``{"check": callable, "message": str}``), where a published CRD would state CEL; a
  failed one is reported as the API server reports a failed CEL rule;
* ``default``: ``apply_defaults`` fills in absent fields, as the API server does before
  validating (a defaulted value is itself defaulted further down);
* ``format`` ``int32``/``int64`` are range checks, ``byte`` is base64, ``date-time`` RFC 3339;
* JSON integers are integers only: ``80.0`` is not an ``integer``.

Failures come back as ``FieldError``s worded like the API server's field errors, e.g.
``spec.hosts[0]: Invalid value: "integer": spec.hosts[0] in body must be of type string:
"integer"``.
"""

from __future__ import annotations

import base64
import binascii
import copy
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from jsonschema import Draft7Validator, FormatChecker, validators
from jsonschema.exceptions import ValidationError

# Field error reasons as in the API's Status causes, with the text that prefixes them.
REASONS = {
    "FieldValueInvalid": "Invalid value",
    "FieldValueRequired": "Required value",
    "FieldValueNotSupported": "Unsupported value",
    "FieldValueForbidden": "Forbidden",
    "FieldValueTooLong": "Too long",
    "FieldValueTooMany": "Too many",
    "FieldValueDuplicate": "Duplicate value",
}
_NO_VALUE = object()


@dataclass(frozen=True)
class FieldError:
    field: str
    reason: str = "FieldValueInvalid"
    detail: str = ""
    value: Any = _NO_VALUE

    def message(self) -> str:
        parts = [REASONS.get(self.reason, self.reason)]
        if self.value is not _NO_VALUE:
            parts.append(render_value(self.value))
        if self.detail:
            parts.append(self.detail)
        return ": ".join(parts)

    def __str__(self) -> str:
        return f"{self.field}: {self.message()}"


def invalid(field: str, value: Any, detail: str) -> FieldError:
    return FieldError(field, "FieldValueInvalid", detail, value)


def required(field: str, detail: str = "") -> FieldError:
    return FieldError(field, "FieldValueRequired", detail)


def render_value(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def field_path(parts: Iterable[str | int]) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


# ----------------------------------------------------------------------- CEL
_DURATION_PART = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_UNIT_NS = {"ns": 1, "us": 1e3, "µs": 1e3, "μs": 1e3, "ms": 1e6, "s": 1e9, "m": 60e9, "h": 3600e9}


def parse_duration_ns(text: str) -> float:
    """Go/CEL duration syntax, e.g. ``1.5s``, ``2h45m``, ``-300ms``; ValueError otherwise."""
    if not isinstance(text, str):
        raise ValueError("not a string")
    sign, body = (-1, text[1:]) if text[:1] == "-" else (1, text.lstrip("+"))
    if body == "0":
        return 0.0
    pos, total = 0, 0.0
    while pos < len(body):
        m = _DURATION_PART.match(body, pos)
        if m is None:
            raise ValueError(f"invalid duration {text!r}")
        total += float(m.group(1)) * _UNIT_NS[m.group(2)]
        pos = m.end()
    if pos == 0:
        raise ValueError(f"invalid duration {text!r}")
    return sign * total


def _min_duration_1ms(value: Any) -> bool:
    return parse_duration_ns(value) >= 1e6


# The CEL rules found in Istio's networking schemas, keyed by their text without blanks.
CEL_RULES: dict[str, Callable[[Any], bool]] = {
    "duration(self)>=duration('1ms')": _min_duration_1ms,
    '!self.contains("*")': lambda s: "*" not in s,
    'self.all(key,!key.contains("*"))': lambda m: all("*" not in k for k in m),
    "self.all(key,key.size()!=0)": lambda m: all(len(k) > 0 for k in m),
}


def _cel(
    validator: Any, rules: list[dict], instance: Any, schema: dict
) -> Iterable[ValidationError]:
    for rule in rules:
        check = CEL_RULES.get(re.sub(r"\s+", "", rule.get("rule", "")))
        if check is None:
            continue
        try:
            ok = check(instance)
        except (ValueError, TypeError, AttributeError):
            ok = False
        if not ok:
            yield ValidationError(rule.get("message") or f"failed rule: {rule.get('rule')}")


def _list_map_keys(
    validator: Any, keys: list[str], instance: Any, schema: dict
) -> Iterable[ValidationError]:
    if not isinstance(instance, list):
        return
    seen: set[str] = set()
    for item in instance:
        if isinstance(item, dict):
            key = json.dumps([item.get(k) for k in keys])
            if key in seen:
                yield ValidationError(f"duplicate entries for key {key}")
            seen.add(key)


def _checks(
    validator: Any, checks: list[dict], instance: Any, schema: dict
) -> Iterable[ValidationError]:
    for check in checks:
        try:
            ok = check["check"](instance)
        except (ValueError, TypeError, AttributeError, KeyError):
            ok = True  # a value of the wrong shape: the type checks report it
        if not ok:
            yield ValidationError(check["message"])


# ------------------------------------------------------------------ formats
FORMATS = FormatChecker(formats=())
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")


@FORMATS.checks("int32")
def _int32(value: Any) -> bool:
    return not isinstance(value, int) or -(2**31) <= value < 2**31


@FORMATS.checks("int64")
def _int64(value: Any) -> bool:
    return not isinstance(value, int) or -(2**63) <= value < 2**63


@FORMATS.checks("byte")
def _byte(value: Any) -> bool:
    if not isinstance(value, str):
        return True
    try:
        base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return False
    return True


@FORMATS.checks("date-time")
def _date_time(value: Any) -> bool:
    return not isinstance(value, str) or bool(_RFC3339.match(value))


def _is_integer(checker: Any, instance: Any) -> bool:
    return isinstance(instance, int) and not isinstance(instance, bool)


_Validator = validators.extend(
    Draft7Validator,
    {
        "x-kubernetes-validations": _cel,
        "x-list-map-keys": _list_map_keys,
        "x-sandbox-checks": _checks,
    },
    type_checker=Draft7Validator.TYPE_CHECKER.redefine("integer", _is_integer),
)


# ------------------------------------------------------ structural -> JSON Schema
_COPIED = (
    "type",
    "enum",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "uniqueItems",
    "minProperties",
    "maxProperties",
    "required",
    "format",
    "multipleOf",
    "x-kubernetes-validations",
    "x-sandbox-checks",
)
_OBJECT_META = {"type": "object"}  # metadata is checked by the API server itself
_RULES = ("x-kubernetes-validations", "x-sandbox-checks")  # rules beside the schema


def to_json_schema(node: dict[str, Any]) -> dict[str, Any]:
    """Translate one structural schema node (recursively) to JSON Schema."""
    out = {k: node[k] for k in _COPIED if k in node}
    for bound in ("Minimum", "Maximum"):
        if node.get(f"exclusive{bound}") is True and bound.lower() in out:
            out[f"exclusive{bound}"] = out.pop(bound.lower())
    if "properties" in node:
        out["properties"] = {k: to_json_schema(v) for k, v in node["properties"].items()}
    if node.get("x-kubernetes-embedded-resource"):
        props = out.setdefault("properties", {})
        props.setdefault("apiVersion", {"type": "string"})
        props.setdefault("kind", {"type": "string"})
        props.setdefault("metadata", _OBJECT_META)
    if isinstance(node.get("additionalProperties"), dict):
        out["additionalProperties"] = to_json_schema(node["additionalProperties"])
    elif "additionalProperties" in node:
        out["additionalProperties"] = node["additionalProperties"]
    elif node.get("type") == "object" and not node.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    if "items" in node:
        out["items"] = to_json_schema(node["items"])
    for combinator in ("allOf", "anyOf", "oneOf"):
        if combinator in node:
            out[combinator] = [to_json_schema(n) for n in node[combinator]]
    if "not" in node:
        out["not"] = to_json_schema(node["not"])
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])
    if node.get("x-kubernetes-list-type") == "set":
        out["uniqueItems"] = True
    elif node.get("x-kubernetes-list-type") == "map":
        out["x-list-map-keys"] = node.get("x-kubernetes-list-map-keys", [])
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
    return out


def root_schema(open_api_v3: dict[str, Any]) -> dict[str, Any]:
    """JSON Schema of a whole custom resource: apiVersion, kind and metadata are implicit."""
    schema = to_json_schema(open_api_v3)
    props = schema.setdefault("properties", {})
    props.setdefault("apiVersion", {"type": "string"})
    props.setdefault("kind", {"type": "string"})
    props["metadata"] = _OBJECT_META  # a CRD's `metadata: {type: object}` does not close it
    schema.setdefault("type", "object")
    return schema


def apply_defaults(node: dict[str, Any], value: Any) -> None:
    """Fill in, in place, every absent field whose schema declares a ``default``."""
    if isinstance(value, dict):
        for key, sub in (node.get("properties") or {}).items():
            if key not in value and "default" in sub:
                value[key] = copy.deepcopy(sub["default"])
            if key in value:
                apply_defaults(sub, value[key])
        extra = node.get("additionalProperties")
        if isinstance(extra, dict):
            for key in value:
                if key not in (node.get("properties") or {}):
                    apply_defaults(extra, value[key])
    elif isinstance(value, list) and isinstance(node.get("items"), dict):
        for item in value:
            apply_defaults(node["items"], item)


class StructuralValidator:
    """Checks whole objects against one structural schema (a CRD's ``openAPIV3Schema``)."""

    def __init__(self, open_api_v3: dict[str, Any]) -> None:
        self.structural = open_api_v3
        self.schema = root_schema(open_api_v3)
        _Validator.check_schema(self.schema)
        self._validator = _Validator(self.schema, format_checker=FORMATS)

    def apply_defaults(self, obj: Any) -> None:
        apply_defaults(self.structural, obj)

    def errors(self, obj: Any) -> list[FieldError]:
        found: list[FieldError] = []
        raised = list(self._validator.iter_errors(obj))
        # As the API server does, a value of the wrong type leaves the rules unevaluated.
        if any(err.validator == "type" for err in raised):
            raised = [err for err in raised if err.validator not in _RULES]
        for err in raised:
            found.extend(_field_errors(err))
        return sorted(set(found), key=lambda e: (e.field, e.reason, e.detail))


# ------------------------------------------------------------ error wording
def _expected_type(schema: dict) -> str:
    t = schema.get("type")
    if isinstance(t, list):
        t = next((x for x in t if x != "null"), t[0])
    return str(t)


def _field_errors(err: ValidationError) -> list[FieldError]:
    path = list(err.absolute_path)
    where = field_path(path) or "<root>"
    kind, inst, arg = err.validator, err.instance, err.validator_value
    if kind == "type":
        found = json_type(inst)
        return [
            invalid(
                where,
                found,
                f"{where} in body must be of type "
                f"{_expected_type(err.schema)}: {render_value(found)}",
            )
        ]
    if kind == "required":
        return [
            required(field_path([*path, p]))
            for p in arg
            if isinstance(inst, dict) and p not in inst
        ]
    if kind == "additionalProperties":
        declared = err.schema.get("properties", {})
        return [
            FieldError(
                field_path([*path, extra]),
                "FieldValueForbidden",
                f'unknown field "{extra}": field not declared in schema',
            )
            for extra in sorted(k for k in inst if k not in declared)
        ]
    if kind == "enum":
        supported = ", ".join(render_value(v) for v in arg if v is not None)
        return [FieldError(where, "FieldValueNotSupported", f"supported values: {supported}", inst)]
    if kind == "oneOf":
        matches = sum(1 for s in arg if _Validator(s).is_valid(inst))
        return [
            invalid(
                where,
                json_type(inst),
                f"{where} in body must validate one and only "
                f"one schema (oneOf). Found {matches} valid alternatives",
            )
        ]
    if kind == "anyOf":
        return [
            invalid(
                where,
                json_type(inst),
                f"{where} in body must be of type "
                f"integer or string: {render_value(json_type(inst))}",
            )
        ]
    return [_bound_error(kind, where, inst, arg, err.message)]


def _bound_error(kind: str, where: str, inst: Any, arg: Any, message: str) -> FieldError:
    if kind in ("minimum", "exclusiveMinimum"):
        op = "greater than or equal to" if kind == "minimum" else "greater than"
        return invalid(where, inst, f"{where} in body should be {op} {arg}")
    if kind in ("maximum", "exclusiveMaximum"):
        op = "less than or equal to" if kind == "maximum" else "less than"
        return invalid(where, inst, f"{where} in body should be {op} {arg}")
    if kind == "format":
        return invalid(
            where, inst, f"{where} in body must be of type {arg}: {render_value(str(inst))}"
        )
    if kind in ("maxItems", "maxProperties"):
        return FieldError(where, "FieldValueTooMany", f"must have at most {arg} items", len(inst))
    if kind == "maxLength":
        return FieldError(where, "FieldValueTooLong", f"may not be more than {arg} bytes")
    if kind in ("minItems", "minLength", "minProperties"):
        return invalid(
            where,
            json_type(inst),
            f"{where} in body should have at least {arg} "
            f"{'chars' if kind == 'minLength' else 'items'}",
        )
    if kind == "pattern":
        return invalid(where, inst, f"{where} in body should match '{arg}'")
    if kind == "uniqueItems":
        return FieldError(where, "FieldValueDuplicate", "shouldn't contain duplicates")
    if kind in ("x-kubernetes-validations", "x-sandbox-checks"):
        return invalid(where, json_type(inst), message)
    return invalid(where, json_type(inst), message)
