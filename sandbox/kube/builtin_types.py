"""Decoding checks, defaults and validation of the built-in kinds the sandbox serves.

Follows what the API server does for Namespaces, Services, ServiceAccounts, Pods and
apps/v1 Deployments, for the fields a deployment pipeline touches: a body whose JSON types
cannot decode into the Go types is a 400, a decoded object is defaulted (replicas 1,
RollingUpdate 25%/25%, ClusterIP allocation, ...) and then validated (422).
"""

from __future__ import annotations

import ipaddress
import itertools
import re
import threading
from typing import Any

from sandbox.kube.selectors import SelectorError, from_label_selector, matches
from sandbox.kube.validation import FieldError, field_path, invalid, render_value, required

Obj = dict[str, Any]

_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
DNS1123_LABEL = re.compile(rf"^{_LABEL}$")
DNS1123_SUBDOMAIN = re.compile(rf"^{_LABEL}(\.{_LABEL})*$")
DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_QUALIFIED = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_PORT_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")

MSG_LABEL = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters "
    "or '-', and must start and end with an alphanumeric character"
)
MSG_SUBDOMAIN = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric "
    "characters, '-' or '.', and must start and end with an alphanumeric character"
)
MSG_1035 = (
    "a DNS-1035 label must consist of lower case alphanumeric characters or '-', "
    "start with an alphabetic character, and end with an alphanumeric character"
)


def check_dns(field: str, value: Any, kind: str) -> list[FieldError]:
    pattern, limit, msg = {
        "label": (DNS1123_LABEL, 63, MSG_LABEL),
        "subdomain": (DNS1123_SUBDOMAIN, 253, MSG_SUBDOMAIN),
        "1035": (DNS1035_LABEL, 63, MSG_1035),
    }[kind]
    if not isinstance(value, str) or not pattern.match(value):
        return [invalid(field, value, msg)]
    if len(value) > limit:
        return [invalid(field, value, f"must be no more than {limit} characters")]
    return []


def check_labels(field: str, labels: Any) -> list[FieldError]:
    errs = []
    for key, value in (labels or {}).items():
        prefix, _, name = key.rpartition("/")
        if (
            (prefix and not DNS1123_SUBDOMAIN.match(prefix))
            or not _QUALIFIED.match(name)
            or len(name) > 63
        ):
            errs.append(
                invalid(
                    field,
                    key,
                    "name part must consist of alphanumeric "
                    "characters, '-', '_' or '.', and must start and end with "
                    "an alphanumeric character",
                )
            )
        if value and (not _QUALIFIED.match(value) or len(value) > 63):
            errs.append(
                invalid(
                    field,
                    value,
                    "a valid label must be an empty string or "
                    "consist of alphanumeric characters, '-', '_' or '.', and "
                    "must start and end with an alphanumeric character",
                )
            )
    return errs


def check_metadata(meta: Obj, name_kind: str) -> list[FieldError]:
    """Name (``name_kind``: label, subdomain or 1035) and labels."""
    errs = check_labels("metadata.labels", meta.get("labels"))
    name = meta.get("name")
    if not name:
        return [*errs, required("metadata.name", "name or generateName is required")]
    return errs + check_dns("metadata.name", name, name_kind)


# ------------------------------------------------------------------ decoding
# Go types of the fields whose JSON types are checked on decode: a type, a dict of fields
# (others are let through), ("map", shape) or ("list", shape).
_META = {
    "name": str,
    "namespace": str,
    "labels": ("map", str),
    "annotations": ("map", str),
    "generateName": str,
}
_CONTAINER = {
    "name": str,
    "image": str,
    "imagePullPolicy": str,
    "ports": ("list", {"containerPort": int, "name": str, "protocol": str}),
    "env": ("list", {"name": str, "value": str}),
    "args": ("list", str),
    "command": ("list", str),
}
_POD_SPEC = {
    "containers": ("list", _CONTAINER),
    "initContainers": ("list", _CONTAINER),
    "serviceAccountName": str,
    "restartPolicy": str,
    "terminationGracePeriodSeconds": int,
    "nodeSelector": ("map", str),
}
_SELECTOR = {"matchLabels": ("map", str)}
SHAPES: dict[str, Any] = {
    "Deployment": {
        "metadata": _META,
        "spec": {
            "replicas": int,
            "selector": _SELECTOR,
            "paused": bool,
            "minReadySeconds": int,
            "progressDeadlineSeconds": int,
            "revisionHistoryLimit": int,
            "template": {"metadata": _META, "spec": _POD_SPEC},
        },
    },
    "Service": {
        "metadata": _META,
        "spec": {
            "type": str,
            "selector": ("map", str),
            "clusterIP": str,
            "ports": ("list", {"port": int, "name": str, "protocol": str, "nodePort": int}),
        },
    },
    "Pod": {"metadata": _META, "spec": _POD_SPEC},
    "Namespace": {"metadata": _META},
    "ServiceAccount": {"metadata": _META},
}
_GO_TYPES = {int: "int32", str: "string", bool: "bool"}


def _json_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _shape_error(value: Any, shape: Any, path: list[str | int]) -> str | None:
    if value is None:
        return None
    if isinstance(shape, type):
        ok = isinstance(value, shape) and not (shape is int and isinstance(value, bool))
        expected = _GO_TYPES[shape]
    elif isinstance(shape, dict):
        ok, expected = isinstance(value, dict), "object"
        if ok:
            for key, sub in shape.items():
                if (err := _shape_error(value.get(key), sub, [*path, key])) is not None:
                    return err
    else:
        container, sub = shape
        ok = isinstance(value, dict if container == "map" else list)
        expected = "map" if container == "map" else "array"
        if ok:
            items = value.items() if container == "map" else enumerate(value)
            for key, item in items:
                if (err := _shape_error(item, sub, [*path, key])) is not None:
                    return err
    if ok:
        return None
    return (
        f"json: cannot unmarshal {_json_kind(value)} into Go struct field "
        f"{field_path(path)} of type {expected}"
    )


def decode_error(kind: str, version: str, obj: Obj) -> str | None:
    """The API server's 400 message for a body that cannot decode into ``kind``."""
    err = _shape_error(obj, SHAPES.get(kind, {"metadata": _META}), [])
    if err is None:
        return None
    return f'{kind} in version "{version}" cannot be handled as a {kind}: {err}'


# ------------------------------------------------------------------ defaults
def default_pod_spec(spec: Obj) -> None:
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("securityContext", {})
    spec.setdefault("schedulerName", "default-scheduler")
    for container in itertools.chain(
        spec.get("containers") or [], spec.get("initContainers") or []
    ):
        if not isinstance(container, dict):
            continue
        image = str(container.get("image", ""))
        tag = image.rsplit("/", 1)[-1].partition(":")[2]
        latest = "@" not in image and tag in ("", "latest")
        container.setdefault("imagePullPolicy", "Always" if latest else "IfNotPresent")
        container.setdefault("terminationMessagePath", "/dev/termination-log")
        container.setdefault("terminationMessagePolicy", "File")
        container.setdefault("resources", {})
        for port in container.get("ports") or []:
            if isinstance(port, dict):
                port.setdefault("protocol", "TCP")


def default_deployment(obj: Obj) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("replicas", 1)
    spec.setdefault("revisionHistoryLimit", 10)
    spec.setdefault("progressDeadlineSeconds", 600)
    strategy = spec.setdefault("strategy", {})
    strategy.setdefault("type", "RollingUpdate")
    if strategy["type"] == "RollingUpdate":
        rolling = strategy.setdefault("rollingUpdate", {})
        rolling.setdefault("maxUnavailable", "25%")
        rolling.setdefault("maxSurge", "25%")
    template = spec.setdefault("template", {})
    if isinstance(template.get("spec"), dict):
        default_pod_spec(template["spec"])


class ClusterIPs:
    """Hands out Service cluster IPs from 10.96.0.0/12, as the default service CIDR."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._next = int(ipaddress.IPv4Address("10.96.0.10"))
        self._used: set[str] = set()

    def allocate(self) -> str:
        with self._lock:
            while str(ipaddress.IPv4Address(self._next)) in self._used:
                self._next += 1
            ip = str(ipaddress.IPv4Address(self._next))
            self._used.add(ip)
            self._next += 1
            return ip

    def reserve(self, ip: str) -> None:
        with self._lock:
            self._used.add(ip)


def default_service(obj: Obj, ips: ClusterIPs, previous: Obj | None = None) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("type", "ClusterIP")
    spec.setdefault("sessionAffinity", "None")
    if spec["type"] != "ExternalName":
        old_ip = (previous or {}).get("spec", {}).get("clusterIP")
        if not spec.get("clusterIP"):
            spec["clusterIP"] = old_ip or ips.allocate()
        elif spec["clusterIP"] != "None":
            ips.reserve(spec["clusterIP"])
        spec.setdefault("clusterIPs", [spec["clusterIP"]])
        spec.setdefault("ipFamilies", ["IPv4"])
        spec.setdefault("ipFamilyPolicy", "SingleStack")
        spec.setdefault("internalTrafficPolicy", "Cluster")
    for port in spec.get("ports") or []:
        if isinstance(port, dict):
            port.setdefault("protocol", "TCP")
            if "port" in port:
                port.setdefault("targetPort", port["port"])
    obj.setdefault("status", {}).setdefault("loadBalancer", {})


def default_namespace(obj: Obj) -> None:
    name = obj["metadata"].get("name", "")
    obj["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = name
    obj.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
    obj.setdefault("status", {}).setdefault("phase", "Active")


def default_pod(obj: Obj) -> None:
    default_pod_spec(obj.setdefault("spec", {}))
    obj.setdefault("status", {}).setdefault("phase", "Pending")


# ---------------------------------------------------------------- validation
def check_containers(path: str, containers: Any) -> list[FieldError]:
    if not containers:
        return [required(path)]
    errs, seen = [], set()
    for i, container in enumerate(containers):
        here = f"{path}[{i}]"
        name = container.get("name")
        if not name:
            errs.append(required(f"{here}.name"))
        else:
            errs += check_dns(f"{here}.name", name, "label")
            if name in seen:
                errs.append(FieldError(f"{here}.name", "FieldValueDuplicate", value=name))
            seen.add(name)
        if not container.get("image"):
            errs.append(required(f"{here}.image"))
        for j, port in enumerate(container.get("ports") or []):
            number = port.get("containerPort")
            if not isinstance(number, int) or not 0 < number < 65536:
                errs.append(
                    invalid(
                        f"{here}.ports[{j}].containerPort",
                        number,
                        "must be between 1 and 65535, inclusive",
                    )
                )
    return errs


def check_pod_spec(path: str, spec: Obj, *, restart_policies: tuple[str, ...]) -> list[FieldError]:
    errs = check_containers(f"{path}.containers", spec.get("containers"))
    policy = spec.get("restartPolicy", "Always")
    if policy not in restart_policies:
        supported = ", ".join(render_value(p) for p in restart_policies)
        errs.append(
            FieldError(
                f"{path}.restartPolicy",
                "FieldValueNotSupported",
                f"supported values: {supported}",
                policy,
            )
        )
    return errs


def validate_deployment(obj: Obj, previous: Obj | None = None) -> list[FieldError]:
    errs = check_metadata(obj.get("metadata", {}), "subdomain")
    spec = obj.get("spec") or {}
    replicas = spec.get("replicas", 1)
    if isinstance(replicas, int) and replicas < 0:
        errs.append(invalid("spec.replicas", replicas, "must be greater than or equal to 0"))
    selector_obj = spec.get("selector")
    template = spec.get("template") or {}
    labels = (template.get("metadata") or {}).get("labels") or {}
    if not selector_obj:
        errs.append(required("spec.selector"))
    else:
        try:
            selector = from_label_selector(selector_obj)
        except SelectorError as exc:
            selector = ()
            errs.append(invalid("spec.selector", selector_obj, str(exc)))
        if not selector:
            errs.append(
                invalid("spec.selector", selector_obj, "empty selector is invalid for deployment")
            )
        elif not matches(selector, labels):
            errs.append(
                invalid(
                    "spec.template.metadata.labels",
                    labels,
                    "`selector` does not match template `labels`",
                )
            )
        if previous is not None and previous.get("spec", {}).get("selector") != selector_obj:
            errs.append(invalid("spec.selector", selector_obj, "field is immutable"))
    errs += check_labels("spec.template.metadata.labels", labels)
    errs += check_pod_spec(
        "spec.template.spec", template.get("spec") or {}, restart_policies=("Always",)
    )
    strategy = (spec.get("strategy") or {}).get("type", "RollingUpdate")
    if strategy not in ("RollingUpdate", "Recreate"):
        errs.append(
            FieldError(
                "spec.strategy.type",
                "FieldValueNotSupported",
                'supported values: "Recreate", "RollingUpdate"',
                strategy,
            )
        )
    return errs


def validate_service(obj: Obj, previous: Obj | None = None) -> list[FieldError]:
    errs = check_metadata(obj.get("metadata", {}), "1035")
    spec = obj.get("spec") or {}
    kind = spec.get("type", "ClusterIP")
    kinds = ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName")
    if kind not in kinds:
        errs.append(
            FieldError(
                "spec.type",
                "FieldValueNotSupported",
                "supported values: " + ", ".join(render_value(k) for k in kinds),
                kind,
            )
        )
    ports = spec.get("ports") or []
    if not ports and kind != "ExternalName":
        errs.append(required("spec.ports"))
    names: set[str] = set()
    for i, port in enumerate(ports):
        errs += _check_service_port(f"spec.ports[{i}]", port, len(ports) > 1, names)
    errs += check_labels("spec.selector", spec.get("selector"))
    old_ip = (previous or {}).get("spec", {}).get("clusterIP")
    if old_ip and spec.get("clusterIP") not in (None, "", old_ip):
        errs.append(invalid("spec.clusterIPs[0]", spec.get("clusterIP"), "may not change once set"))
    return errs


def _check_service_port(path: str, port: Obj, named: bool, names: set[str]) -> list[FieldError]:
    errs = []
    name = port.get("name")
    if named and not name:
        errs.append(required(f"{path}.name"))
    elif name:
        if not _PORT_NAME.match(name) or len(name) > 63:
            errs.append(invalid(f"{path}.name", name, MSG_LABEL))
        if name in names:
            errs.append(FieldError(f"{path}.name", "FieldValueDuplicate", value=name))
        names.add(name)
    number = port.get("port")
    if not isinstance(number, int) or not 0 < number < 65536:
        errs.append(invalid(f"{path}.port", number, "must be between 1 and 65535, inclusive"))
    protocol = port.get("protocol", "TCP")
    if protocol not in ("TCP", "UDP", "SCTP"):
        errs.append(
            FieldError(
                f"{path}.protocol",
                "FieldValueNotSupported",
                'supported values: "SCTP", "TCP", "UDP"',
                protocol,
            )
        )
    target = port.get("targetPort")
    if isinstance(target, int) and not 0 < target < 65536:
        errs.append(invalid(f"{path}.targetPort", target, "must be between 1 and 65535, inclusive"))
    return errs


def validate_pod(obj: Obj, previous: Obj | None = None) -> list[FieldError]:
    errs = check_metadata(obj.get("metadata", {}), "subdomain")
    return errs + check_pod_spec(
        "spec", obj.get("spec") or {}, restart_policies=("Always", "OnFailure", "Never")
    )


def validate_namespace(obj: Obj, previous: Obj | None = None) -> list[FieldError]:
    return check_metadata(obj.get("metadata", {}), "label")


def validate_service_account(obj: Obj, previous: Obj | None = None) -> list[FieldError]:
    return check_metadata(obj.get("metadata", {}), "subdomain")
