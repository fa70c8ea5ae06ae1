"""The three PATCH flavours of the Kubernetes API.

* JSON merge patch (RFC 7386): objects merge recursively, ``null`` deletes, anything
  else (lists included) replaces.
* JSON patch (RFC 6902): a list of ``add``/``remove``/``replace``/``move``/``copy``/``test``
  operations addressed by JSON pointers (RFC 6901).
* Strategic merge patch, for built-in types only: a merge patch in which the lists that
  Kubernetes declares with a merge key (containers by ``name``, ports by port number, ...)
  merge element-wise, with the ``$patch: delete|replace`` directives.
"""

from __future__ import annotations

from typing import Any

from sandbox.kube.store import clone


class PatchError(ValueError):
    """The patch could not be applied to this object (HTTP 422)."""


class BadPatch(ValueError):
    """The patch document itself is malformed (HTTP 400)."""


# ----------------------------------------------------------------- RFC 7386
def merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return clone(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


# ----------------------------------------------------------------- RFC 6902
def json_patch(doc: Any, ops: Any) -> Any:
    if not isinstance(ops, list):
        raise BadPatch("a JSON patch must be a list of operations")
    doc = clone(doc)
    for op in ops:
        doc = _apply_op(doc, op)
    return doc


def _apply_op(doc: Any, op: Any) -> Any:
    if not isinstance(op, dict) or not isinstance(op.get("path"), str):
        raise BadPatch(f"invalid JSON patch operation: {op!r}")
    kind, path = op.get("op"), op["path"]
    if kind in ("add", "replace", "test") and "value" not in op:
        raise BadPatch(f"operation {kind!r} on {path!r} has no value")
    if kind == "add":
        return _add(doc, path, clone(op["value"]))
    if kind == "remove":
        return _remove(doc, path)[0]
    if kind == "replace":
        if path == "":
            return clone(op["value"])
        _resolve(doc, path)  # must exist
        return _add(_remove(doc, path)[0], path, clone(op["value"]))
    if kind in ("move", "copy"):
        source = op.get("from")
        if not isinstance(source, str):
            raise BadPatch(f"operation {kind!r} needs 'from'")
        if kind == "move":
            if path.startswith(source + "/"):
                raise PatchError(f"cannot move {source!r} into its own child {path!r}")
            doc, value = _remove(doc, source)
        else:
            value = clone(_resolve(doc, source))
        return _add(doc, path, value)
    if kind == "test":
        if _resolve(doc, path) != op["value"]:
            raise PatchError(f"testing value {path} failed")
        return doc
    raise BadPatch(f"unknown JSON patch operation {kind!r}")


def _tokens(pointer: str) -> list[str]:
    if pointer == "":
        return []
    if not pointer.startswith("/"):
        raise BadPatch(f"JSON pointer {pointer!r} must start with '/'")
    return [t.replace("~1", "/").replace("~0", "~") for t in pointer[1:].split("/")]


def _index(container: list, token: str, pointer: str, *, allow_end: bool) -> int:
    if token == "-" and allow_end:
        return len(container)
    if not token.isdigit() or (token != "0" and token.startswith("0")):
        raise PatchError(f"invalid array index {token!r} in {pointer!r}")
    index = int(token)
    if index > len(container) or (index == len(container) and not allow_end):
        raise PatchError(f"array index {index} out of range in {pointer!r}")
    return index


def _resolve(doc: Any, pointer: str) -> Any:
    node = doc
    for token in _tokens(pointer):
        if isinstance(node, dict) and token in node:
            node = node[token]
        elif isinstance(node, list):
            node = node[_index(node, token, pointer, allow_end=False)]
        else:
            raise PatchError(f"doc is missing path: {pointer!r}")
    return node


def _parent(doc: Any, pointer: str) -> tuple[Any, str]:
    tokens = _tokens(pointer)
    if not tokens:
        raise PatchError("the whole document cannot be the target here")
    parent_pointer = "".join("/" + t.replace("~", "~0").replace("/", "~1") for t in tokens[:-1])
    return _resolve(doc, parent_pointer), tokens[-1]


def _add(doc: Any, pointer: str, value: Any) -> Any:
    if pointer == "":
        return value
    parent, last = _parent(doc, pointer)
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        parent.insert(_index(parent, last, pointer, allow_end=True), value)
    else:
        raise PatchError(f"doc is missing path: {pointer!r}")
    return doc


def _remove(doc: Any, pointer: str) -> tuple[Any, Any]:
    parent, last = _parent(doc, pointer)
    if isinstance(parent, dict):
        if last not in parent:
            raise PatchError(f"doc is missing path: {pointer!r}")
        return doc, parent.pop(last)
    if isinstance(parent, list):
        return doc, parent.pop(_index(parent, last, pointer, allow_end=False))
    raise PatchError(f"doc is missing path: {pointer!r}")


# ----------------------------------------------------- strategic merge patch
# Lists Kubernetes merges by key, by field name; the first key present in an element wins
# (container ports are keyed by containerPort, service ports by port).
MERGE_KEYS: dict[str, tuple[str, ...]] = {
    "containers": ("name",),
    "initContainers": ("name",),
    "ephemeralContainers": ("name",),
    "env": ("name",),
    "volumes": ("name",),
    "volumeMounts": ("mountPath",),
    "volumeDevices": ("devicePath",),
    "ports": ("containerPort", "port"),
    "imagePullSecrets": ("name",),
    "hostAliases": ("ip",),
    "conditions": ("type",),
    "ownerReferences": ("uid",),
    "topologySpreadConstraints": ("topologyKey",),
}


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return clone(patch)
    if patch.get("$patch") == "replace":
        return {k: clone(v) for k, v in patch.items() if k != "$patch"}
    if patch.get("$patch") == "delete":
        return None
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key.startswith("$setElementOrder/") or key in ("$retainKeys", "$patch"):
            continue
        if value is None:
            result.pop(key, None)
        elif isinstance(value, list) and key in MERGE_KEYS:
            result[key] = _merge_list(result.get(key), value, MERGE_KEYS[key])
        else:
            merged = strategic_merge_patch(result.get(key), value)
            if merged is None:
                result.pop(key, None)
            else:
                result[key] = merged
    return result


def _element_key(element: Any, keys: tuple[str, ...]) -> tuple[str, Any] | None:
    if isinstance(element, dict):
        for k in keys:
            if k in element:
                return k, element[k]
    return None


def _merge_list(current: Any, patch: list, keys: tuple[str, ...]) -> list:
    if any(isinstance(e, dict) and e.get("$patch") == "replace" for e in patch):
        return [clone(e) for e in patch if not (isinstance(e, dict) and "$patch" in e)]
    result = [clone(e) for e in current] if isinstance(current, list) else []
    for element in patch:
        key = _element_key(element, keys)
        if key is None:  # not keyed: the list cannot merge, so the patch replaces it
            return [clone(e) for e in patch]
        position = next((i for i, e in enumerate(result) if _element_key(e, keys) == key), None)
        if isinstance(element, dict) and element.get("$patch") == "delete":
            if position is not None:
                result.pop(position)
        elif position is None:
            result.append(strategic_merge_patch({}, element))
        else:
            result[position] = strategic_merge_patch(result[position], element)
    return result
