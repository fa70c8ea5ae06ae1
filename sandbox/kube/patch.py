"""The three PATCH flavours of the Kubernetes API.

* JSON merge patch (RFC 7386): objects merge recursively, ``null`` deletes, anything
  else (lists included) replaces.
* JSON patch (RFC 6902): a list of ``add``/``remove``/``replace``/``move``/``copy``/``test``
  operations addressed by JSON pointers (RFC 6901), applied by the ``jsonpatch`` library.
* Strategic merge patch, for built-in types only: a merge patch in which the lists that
  Kubernetes declares with a merge key (containers by ``name``, ports by port number, ...)
  merge element-wise, with the ``$patch: delete|replace`` directives.
"""

from __future__ import annotations

from typing import Any

import jsonpatch

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
    """``doc`` with the operations applied (``doc`` itself is left untouched).

    A malformed patch (not a list, an unknown operation, a missing member, a pointer that
    is not a JSON pointer) is a BadPatch; a well-formed one that cannot be applied to this
    document (a missing path, an index out of range, a failed ``test``) a PatchError.
    """
    if not isinstance(ops, list):
        raise BadPatch("a JSON patch must be a list of operations")
    try:
        patch = jsonpatch.JsonPatch(ops)
        for op in ops:
            for member in ("path", "from"):
                if isinstance(op.get(member), str):
                    jsonpatch.JsonPointer(op[member])  # the syntax only; resolving comes later
    except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
        raise BadPatch(f"invalid JSON patch: {exc}") from exc
    try:
        return patch.apply(doc)
    except jsonpatch.InvalidJsonPatch as exc:  # e.g. "add" without a value
        raise BadPatch(f"invalid JSON patch: {exc}") from exc
    except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
        raise PatchError(f"the JSON patch cannot be applied: {exc}") from exc


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
