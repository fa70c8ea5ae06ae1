"""Validation of Istio objects against Istio's published CRDs (reference data beside the repo).

Kubernetes validates custom resources with the CRD's structural OpenAPI schema; with strict
field validation (kubectl's default) unknown fields are refused. The CEL rules
(x-kubernetes-validations) are not evaluated here.
"""

from __future__ import annotations

import copy
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from tests.support.crd_schema import strict

REFERENCE = Path(__file__).resolve().parents[2].parent / "shared" / "reference" / "istio"
CRD_FILE = REFERENCE / "networking-crds.yaml"
BOOKINFO = REFERENCE / "bookinfo"


@cache
def _validators() -> dict[tuple[str, str], jsonschema.protocols.Validator]:
    out = {}
    for crd in yaml.safe_load_all(CRD_FILE.read_text()):
        if not crd or crd.get("kind") != "CustomResourceDefinition":
            continue
        kind = crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            schema = copy.deepcopy(version["schema"]["openAPIV3Schema"])
            schema["properties"]["spec"] = strict(schema["properties"]["spec"])
            out[(kind, version["name"])] = jsonschema.Draft7Validator(schema)
    return out


def crd_errors(obj: dict[str, Any]) -> list[str]:
    """Schema errors of an Istio object, by its apiVersion and kind; empty when valid."""
    version = obj["apiVersion"].split("/")[1]
    validator = _validators()[(obj["kind"], version)]
    return [
        f"{'.'.join(str(p) for p in e.absolute_path)}: {e.message}"
        for e in validator.iter_errors(obj)
    ]


def bookinfo_objects(filename: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((BOOKINFO / filename).read_text()) if d]
