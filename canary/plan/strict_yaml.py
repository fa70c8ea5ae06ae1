"""YAML as plans are written: the safe loader, less what a plan never needs.

Plans come from files people edit and from forms; what YAML allows beyond plain mappings,
lists and scalars only hides mistakes or abuse, so it is refused, with the line:

* tags (``!!python/object/apply``, ``!foo``, even ``!!str``): the safe loader would not run
  them, but a plan has no use for them either;
* anchors and aliases, and so merge keys: a few lines of aliases expand to gigabytes once
  the document is turned into dicts (the "billion laughs"); refused before anything expands;
* keys that are not plain values, and duplicate keys at any depth: YAML's last-one-wins
  would let a second ``service:`` quietly release another service;
* nesting deeper than MAX_DEPTH: a plan is a few levels deep, and the composer recurses;
* text larger than MAX_BYTES, or not UTF-8 (see `decode`).

JSON is YAML, so JSON plans load here too.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from typing import Any

import yaml

MAX_BYTES = 1 << 20  # 1 MiB; the BookInfo plan is 1.5 KiB
MAX_DEPTH = 32

_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]+")


class YamlRefused(Exception):
    """Text that is not a plan's YAML; `line` is 1-based (0: the whole text), `field` the
    path of the node it is about ('' when none)."""

    def __init__(self, line: int, message: str, field: str = ""):
        self.line = line
        self.message = message
        self.field = field
        super().__init__(f"line {line}: {field + ': ' if field else ''}{message}")


def decode(data: bytes) -> str:
    """UTF-8 text from a plan file's bytes (a BOM is allowed), or YamlRefused."""
    if len(data) > MAX_BYTES:
        raise YamlRefused(0, f"the plan is larger than {_size(MAX_BYTES)}")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise YamlRefused(line, f"not UTF-8 text (byte 0x{data[exc.start]:02x})") from None


def load(text: str) -> tuple[Any, yaml.Node | None]:
    """The document and its node tree (for line numbers), or YamlRefused."""
    if len(text) > MAX_BYTES or len(text.encode("utf-8", "surrogatepass")) > MAX_BYTES:
        raise YamlRefused(0, f"the plan is larger than {_size(MAX_BYTES)}")
    try:
        return _load(text)
    except YamlRefused:
        raise
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        reason = exc.problem or exc.context or "malformed"
        raise YamlRefused(mark.line + 1 if mark else 0, f"YAML syntax error: {reason}") from None
    except yaml.reader.ReaderError as exc:
        line = text[: exc.position].count("\n") + 1
        raise YamlRefused(line, f"YAML syntax error: {_reader_reason(exc)}") from None
    except yaml.YAMLError as exc:
        raise YamlRefused(0, f"YAML syntax error: {str(exc).splitlines()[0]}") from None


def _load(text: str) -> tuple[Any, yaml.Node | None]:
    loader = _PlanLoader(text)  # checks that every character is printable
    try:
        node = loader.get_single_node()
        return (loader.construct_document(node) if node is not None else None), node
    finally:
        loader.dispose()


def _reader_reason(exc: yaml.reader.ReaderError) -> str:
    character = exc.character
    code = ord(character) if isinstance(character, str) else character
    return f"character #x{code:04x} is not allowed in YAML"


def _size(limit: int) -> str:
    return f"{limit >> 20} MiB" if limit >= 1 << 20 else f"{limit} bytes"


class _PlanLoader(yaml.SafeLoader):
    """The pure-Python safe loader, checking every event before the composer uses it.

    It follows where in the document each event is (`_frames`), so a refusal names the
    field. The C loader cannot be used: it composes without calling `get_event`.
    """

    def __init__(self, stream: str):
        super().__init__(stream)
        self._frames: list[_Frame] = []

    def get_event(self) -> yaml.Event:
        event = super().get_event()
        if isinstance(event, yaml.NodeEvent):
            self._check_node(event)
        elif isinstance(event, yaml.CollectionEndEvent):
            self._frames.pop()
        return event

    def _check_node(self, event: yaml.NodeEvent) -> None:
        line = event.start_mark.line + 1
        top = self._frames[-1] if self._frames else None
        if top is not None:
            top.enter(event, self._path)
        if isinstance(event, yaml.AliasEvent):
            raise self._refused(line, f"YAML aliases (*{event.anchor}) are not allowed in a plan")
        if event.anchor is not None:
            raise self._refused(line, f"YAML anchors (&{event.anchor}) are not allowed in a plan")
        if event.tag is not None:
            tag = _short_tag(event.tag)
            raise self._refused(line, f"YAML tags ({tag}) are not allowed in a plan")
        if isinstance(event, yaml.CollectionStartEvent):
            if len(self._frames) >= MAX_DEPTH:
                raise self._refused(line, f"nested deeper than {MAX_DEPTH} levels")
            self._frames.append(_Frame(isinstance(event, yaml.MappingStartEvent)))

    def _path(self) -> str:
        return field_path(p for f in self._frames if (p := f.part()) is not None)

    def _refused(self, line: int, message: str) -> YamlRefused:
        return YamlRefused(line, message, self._path())


class _Frame:
    """Where the loader is inside one mapping or sequence."""

    def __init__(self, mapping: bool):
        self.mapping = mapping
        self.index = -1  # the current item of a sequence
        self.key: str | None = None  # the current key of a mapping
        self.expect_key = True
        self.keys: dict[str, int] = {}  # key -> line, for duplicates

    def part(self) -> str | int | None:
        return self.key if self.mapping else (self.index if self.index >= 0 else None)

    def enter(self, event: yaml.NodeEvent, path: Callable[[], str]) -> None:
        if not self.mapping:
            self.index += 1
            return
        if not self.expect_key:  # the value of the current key
            self.expect_key = True
            return
        self.expect_key = False
        line = event.start_mark.line + 1
        if not isinstance(event, yaml.ScalarEvent):
            self.key = None  # the refusal names the mapping
            raise YamlRefused(line, "a mapping key must be a plain value", path())
        self.key = event.value
        if event.value == "<<" and event.implicit[0]:
            raise YamlRefused(line, "YAML merge keys (<<) are not allowed in a plan", path())
        if event.value in self.keys:
            first = self.keys[event.value]
            raise YamlRefused(line, f"given twice (first on line {first})", path())
        self.keys[event.value] = line


def field_path(parts: Iterable[str | int]) -> str:
    """'steps[2].weight' from ['steps', 2, 'weight']; odd keys quoted, so it stays one line."""
    path = ""
    for part in parts:
        if isinstance(part, int):
            path += f"[{part}]"
            continue
        name = part if _PLAIN_KEY.fullmatch(part) else json.dumps(part)
        path += f".{name}" if path else name
    return path


def _short_tag(tag: str) -> str:
    return "!!" + tag.removeprefix("tag:yaml.org,2002:") if tag.startswith("tag:yaml") else tag
