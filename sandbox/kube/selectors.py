"""Label and field selectors, in the API's string syntax and as ``LabelSelector`` objects.

String syntax (``?labelSelector=``): comma-separated requirements, each one of ``key``,
``!key``, ``key=value``, ``key==value``, ``key!=value``, ``key in (a,b)``, ``key notin (a,b)``.
Field selectors (``?fieldSelector=``) take ``path=value``, ``path==value`` and
``path!=value`` on dotted paths such as ``metadata.name`` or ``status.phase``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


class SelectorError(ValueError):
    pass


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # in | notin | exists | !exists  ("=" is "in" one value, "!=" is "notin")
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.op == "exists":
            return self.key in labels
        if self.op == "!exists":
            return self.key not in labels
        if self.op == "in":
            return self.key in labels and labels[self.key] in self.values
        return self.key not in labels or labels[self.key] not in self.values


Selector = tuple[Requirement, ...]

_SET_REQ = re.compile(r"^\s*([^\s!=(),]+)\s+(in|notin)\s*\(([^()]*)\)\s*$")
_EQ_REQ = re.compile(r"^\s*([^\s!=(),]+)\s*(==|=|!=)\s*([^\s!=(),]*)\s*$")
_EXISTS_REQ = re.compile(r"^\s*(!?)\s*([^\s!=(),]+)\s*$")
_KEY = re.compile(r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")


def _split_top_level(text: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for ch in text:
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if depth < 0:
            raise SelectorError(f"unbalanced parentheses in {text!r}")
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    if depth:
        raise SelectorError(f"unbalanced parentheses in {text!r}")
    return [*parts, current]


def _check_key(key: str, text: str) -> str:
    if not _KEY.match(key) or len(key.rsplit("/", 1)[-1]) > 63:
        raise SelectorError(f"unable to parse requirement: invalid label key {key!r} in {text!r}")
    return key


def parse_label_selector(text: str | None) -> Selector:
    if not text or not text.strip():
        return ()
    reqs = []
    for part in _split_top_level(text):
        if m := _SET_REQ.match(part):
            values = frozenset(v.strip() for v in m.group(3).split(",") if v.strip())
            reqs.append(Requirement(_check_key(m.group(1), text), m.group(2), values))
        elif m := _EQ_REQ.match(part):
            op = "notin" if m.group(2) == "!=" else "in"
            reqs.append(Requirement(_check_key(m.group(1), text), op, frozenset([m.group(3)])))
        elif m := _EXISTS_REQ.match(part):
            op = "!exists" if m.group(1) else "exists"
            reqs.append(Requirement(_check_key(m.group(2), text), op))
        else:
            raise SelectorError(f"unable to parse requirement: {part.strip()!r}")
    return tuple(reqs)


def from_label_selector(obj: Mapping[str, Any] | None) -> Selector:
    """A ``LabelSelector`` object (``matchLabels`` + ``matchExpressions``)."""
    if not obj:
        return ()
    reqs = [
        Requirement(k, "in", frozenset([str(v)])) for k, v in (obj.get("matchLabels") or {}).items()
    ]
    ops = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!exists"}
    for expr in obj.get("matchExpressions") or []:
        op = ops.get(expr.get("operator", ""))
        if op is None:
            raise SelectorError(f"{expr.get('operator')!r} is not a valid selector operator")
        reqs.append(Requirement(expr.get("key", ""), op, frozenset(expr.get("values") or [])))
    return tuple(reqs)


def to_string(selector: Selector) -> str:
    out = []
    for r in selector:
        values = sorted(r.values)
        if r.op == "in" and len(values) == 1:
            out.append(f"{r.key}={values[0]}")
        elif r.op in ("in", "notin"):
            out.append(f"{r.key} {r.op} ({','.join(values)})")
        else:
            out.append(r.key if r.op == "exists" else f"!{r.key}")
    return ",".join(out)


def matches(selector: Selector, labels: Mapping[str, str] | None) -> bool:
    labels = labels or {}
    return all(r.matches(labels) for r in selector)


# ------------------------------------------------------------ field selectors
FieldSelector = tuple[tuple[str, bool, str], ...]  # (dotted path, equal?, value)


def parse_field_selector(text: str | None) -> FieldSelector:
    if not text or not text.strip():
        return ()
    out = []
    for part in text.split(","):
        m = re.match(r"^\s*([A-Za-z0-9_.]+)\s*(==|=|!=)\s*(.*?)\s*$", part)
        if m is None:
            raise SelectorError(f"invalid field selector: {part.strip()!r}")
        out.append((m.group(1), m.group(2) != "!=", m.group(3)))
    return tuple(out)


def _lookup(obj: Mapping[str, Any], path: str) -> str:
    node: Any = obj
    for part in path.split("."):
        node = node.get(part) if isinstance(node, Mapping) else None
    if node is None:
        return ""
    return str(node).lower() if isinstance(node, bool) else str(node)


def field_matches(selector: FieldSelector, obj: Mapping[str, Any]) -> bool:
    return all((_lookup(obj, path) == value) == equal for path, equal, value in selector)
