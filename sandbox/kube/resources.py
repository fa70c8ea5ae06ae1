"""The resource types the sandbox serves, and the discovery documents that describe them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sandbox.kube import builtin_types as bt

ISTIO = "networking.istio.io"
ISTIO_VERSIONS = ("v1", "v1beta1", "v1alpha3")
GATEWAY_API = "gateway.networking.k8s.io"
GATEWAY_API_VERSIONS = ("v1", "v1beta1")
ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
KUBE_VERSION = {
    "major": "1",
    "minor": "31",
    "gitVersion": "v1.31.0-sandbox",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2024-08-13T00:00:00Z",
    "goVersion": "go1.22.5",
    "compiler": "gc",
    "platform": "linux/amd64",
}

Validate = Callable[[dict, dict | None], list]


@dataclass(frozen=True)
class ResourceType:
    group: str
    versions: tuple[str, ...]
    plural: str
    kind: str
    namespaced: bool = True
    short_names: tuple[str, ...] = ()
    subresources: tuple[str, ...] = ("status",)
    builtin: bool = True  # a Go type: strategic merge patch and decoding checks apply
    returns_deleted_object: bool = True  # DELETE answers the object rather than a Status
    validate: Validate | None = None
    categories: tuple[str, ...] = field(default=())

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def qualified(self) -> str:
        """``deployments.apps``; core types have no group suffix."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def qualified_kind(self) -> str:
        return f"{self.kind}.{self.group}" if self.group else self.kind

    @property
    def storage_version(self) -> str:
        return self.versions[0]

    def api_version(self, version: str | None = None) -> str:
        version = version or self.storage_version
        return f"{self.group}/{version}" if self.group else version


RESOURCES: tuple[ResourceType, ...] = (
    ResourceType(
        "",
        ("v1",),
        "namespaces",
        "Namespace",
        namespaced=False,
        short_names=("ns",),
        validate=bt.validate_namespace,
    ),
    ResourceType(
        "",
        ("v1",),
        "services",
        "Service",
        short_names=("svc",),
        validate=bt.validate_service,
        categories=("all",),
    ),
    ResourceType(
        "",
        ("v1",),
        "pods",
        "Pod",
        short_names=("po",),
        validate=bt.validate_pod,
        categories=("all",),
    ),
    ResourceType(
        "",
        ("v1",),
        "serviceaccounts",
        "ServiceAccount",
        short_names=("sa",),
        subresources=(),
        validate=bt.validate_service_account,
    ),
    ResourceType(
        "apps",
        ("v1",),
        "deployments",
        "Deployment",
        short_names=("deploy",),
        subresources=("status", "scale"),
        returns_deleted_object=False,
        validate=bt.validate_deployment,
        categories=("all",),
    ),
    ResourceType(
        ISTIO,
        ISTIO_VERSIONS,
        "virtualservices",
        "VirtualService",
        short_names=("vs",),
        builtin=False,
        categories=("istio-io", "networking-istio-io"),
    ),
    ResourceType(
        ISTIO,
        ISTIO_VERSIONS,
        "destinationrules",
        "DestinationRule",
        short_names=("dr",),
        builtin=False,
        categories=("istio-io", "networking-istio-io"),
    ),
    ResourceType(
        GATEWAY_API,
        GATEWAY_API_VERSIONS,
        "httproutes",
        "HTTPRoute",
        builtin=False,
        categories=("gateway-api",),
    ),
)

BY_PATH: dict[tuple[str, str, str], ResourceType] = {
    (r.group, v, r.plural): r for r in RESOURCES for v in r.versions
}
BY_PLURAL: dict[str, ResourceType] = {r.plural: r for r in RESOURCES}


def groups() -> dict[str, tuple[str, ...]]:
    """Named API groups and their versions, preferred first."""
    out: dict[str, tuple[str, ...]] = {}
    for r in RESOURCES:
        if r.group:
            out[r.group] = r.versions
    return out


# ------------------------------------------------------------------- discovery
def _group_doc(name: str, versions: tuple[str, ...]) -> dict[str, Any]:
    listed = [{"groupVersion": f"{name}/{v}", "version": v} for v in versions]
    return {"name": name, "versions": listed, "preferredVersion": listed[0]}


def api_versions(server_address: str) -> dict[str, Any]:
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [
            {"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}
        ],
    }


def api_group_list() -> dict[str, Any]:
    return {
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": [_group_doc(g, v) for g, v in groups().items()],
    }


def api_group(name: str) -> dict[str, Any] | None:
    versions = groups().get(name)
    if versions is None:
        return None
    return {"kind": "APIGroup", "apiVersion": "v1", **_group_doc(name, versions)}


def api_resource_list(group: str, version: str) -> dict[str, Any] | None:
    served = [r for r in RESOURCES if r.group == group and version in r.versions]
    if not served:
        return None
    items: list[dict[str, Any]] = []
    for r in served:
        main = {
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": list(
                ALL_VERBS
                if r.namespaced
                else ("create", "delete", "get", "list", "patch", "update", "watch")
            ),
        }
        if r.short_names:
            main["shortNames"] = list(r.short_names)
        if r.categories:
            main["categories"] = list(r.categories)
        items.append(main)
        for sub in r.subresources:
            entry = {
                "name": f"{r.plural}/{sub}",
                "singularName": "",
                "namespaced": r.namespaced,
                "kind": r.kind,
                "verbs": ["get", "patch", "update"],
            }
            if sub == "scale":
                entry |= {"group": "autoscaling", "version": "v1", "kind": "Scale"}
            items.append(entry)
    group_version = f"{group}/{version}" if group else version
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": items,
    }
