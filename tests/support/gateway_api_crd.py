"""HTTPRoutes checked against the Gateway API's published CRD (reference data beside the
repo): its structural schema at v1 and v1beta1, unknown fields refused, and the defaults
an API server applies. The CEL rules are not evaluated here."""

from __future__ import annotations

import copy
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from tests.support.crd_schema import strict, with_defaults

REFERENCE = Path(__file__).resolve().parents[2].parent / "shared" / "reference" / "gateway-api"
CRD_FILE = REFERENCE / "httproute-crd.yaml"
BOOKINFO = REFERENCE / "bookinfo"
VERSIONS = ("v1", "v1beta1")


@cache
def _schemas() -> dict[str, dict[str, Any]]:
    crd = yaml.safe_load(CRD_FILE.read_text())
    return {v["name"]: v["schema"]["openAPIV3Schema"] for v in crd["spec"]["versions"]}


@cache
def _validator(version: str) -> jsonschema.protocols.Validator:
    schema = copy.deepcopy(_schemas()[version])
    schema["properties"]["spec"] = strict(schema["properties"]["spec"])
    return jsonschema.Draft7Validator(schema)


def served_versions() -> list[str]:
    crd = yaml.safe_load(CRD_FILE.read_text())
    return [v["name"] for v in crd["spec"]["versions"] if v.get("served")]


def route_errors(route: dict[str, Any], version: str | None = None) -> list[str]:
    """Schema errors of an HTTPRoute at `version` (default: its own); empty when valid."""
    version = version or route["apiVersion"].split("/")[1]
    viewed = {**route, "apiVersion": f"gateway.networking.k8s.io/{version}"}
    return [
        f"{'.'.join(str(p) for p in e.absolute_path)}: {e.message}"
        for e in _validator(version).iter_errors(viewed)
    ]


def defaulted(route: dict[str, Any]) -> dict[str, Any]:
    """The HTTPRoute as an API server stores it: the CRD's defaults applied."""
    return with_defaults(route, _schemas()["v1"])


def bookinfo_objects(filename: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((BOOKINFO / filename).read_text()) if d]
