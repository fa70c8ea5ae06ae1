"""Validation schemas of Istio's ``networking.istio.io`` VirtualService and DestinationRule.

Written for this project as compact Python, from the public Istio networking API reference
(istio.io, "Virtual Service" and "Destination Rule" configuration pages; the API is
Apache-2.0, Copyright Istio Authors). The schema has the shape Istio's CustomResource
Definitions give these kinds: an OpenAPI v3 structural schema where every object declares
its fields (unknown fields are refused, since Istio sets no
``x-kubernetes-preserve-unknown-fields`` under ``spec``), protobuf ``int32`` fields carry
``format: int32``, ``uint32`` fields the range 0..4294967295, durations must parse and be
at least 1 ms, and protobuf ``oneof`` groups accept at most one member. The same schema
serves the ``v1``, ``v1beta1`` and ``v1alpha3`` versions, as Istio's CRDs do.

``IstioValidator`` checks objects against this schema or, given ``crds_file``, against the
``openAPIV3Schema`` of each served version in a published CRD file.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from sandbox.kube.validation import FieldError, StructuralValidator

GROUP = "networking.istio.io"
VERSIONS = ("v1", "v1beta1", "v1alpha3")

Schema = dict[str, Any]


# --------------------------------------------------------------- builders
def string(**extra: Any) -> Schema:
    return {"type": "string", **extra}


def boolean(*, nullable: bool = False) -> Schema:
    return {"type": "boolean", **({"nullable": True} if nullable else {})}


def int32() -> Schema:
    return {"type": "integer", "format": "int32"}


def uint32(*, nullable: bool = False) -> Schema:
    out: Schema = {"type": "integer", "minimum": 0, "maximum": 4294967295}
    return out | ({"nullable": True} if nullable else {})


def double(**extra: Any) -> Schema:
    return {"type": "number", "format": "double", **extra}


def duration() -> Schema:
    rule = {
        "rule": "duration(self) >= duration('1ms')",
        "message": "must be a valid duration greater than 1ms",
    }
    return {"type": "string", "x-kubernetes-validations": [rule]}


def enum(*values: str) -> Schema:
    return {"type": "string", "enum": list(values)}


def array(items: Schema, **extra: Any) -> Schema:
    return {"type": "array", "items": items, **extra}


def strings() -> Schema:
    return array(string())


def map_of(values: Schema, **extra: Any) -> Schema:
    return {"type": "object", "additionalProperties": values, **extra}


def at_most_one(*groups: Iterable[str]) -> list[Schema]:
    """A protobuf ``oneof``: none or exactly one of the keys may be set."""
    rules = []
    for keys in groups:
        keys = list(keys)
        present = [{"required": [k]} for k in keys]
        rules.append({"oneOf": [{"not": {"anyOf": present}}, *present]})
    return rules


def obj(
    properties: dict[str, Schema],
    *,
    required: Iterable[str] = (),
    oneof: Iterable[str] = (),
    oneofs: Iterable[Iterable[str]] = (),
) -> Schema:
    out: Schema = {"type": "object", "properties": properties}
    if required:
        out["required"] = list(required)
    groups = [list(oneof)] if oneof else [list(g) for g in oneofs]
    rules = at_most_one(*groups)
    if len(rules) == 1:
        out |= rules[0]
    elif rules:
        out["allOf"] = rules
    return out


# ------------------------------------------------------ shared message types
def string_match() -> Schema:
    return obj(
        {"exact": string(), "prefix": string(), "regex": string()},
        oneof=("exact", "prefix", "regex"),
    )


def port_selector() -> Schema:
    return obj({"number": uint32()})


def destination() -> Schema:
    return obj({"host": string(), "subset": string(), "port": port_selector()}, required=["host"])


def percent() -> Schema:
    return obj({"value": double()})


def header_operations() -> Schema:
    return obj({"set": map_of(string()), "add": map_of(string()), "remove": strings()})


def headers() -> Schema:
    return obj({"request": header_operations(), "response": header_operations()})


# ------------------------------------------------------------ VirtualService
def http_match_request() -> Schema:
    return obj(
        {
            "name": string(),
            "uri": string_match(),
            "scheme": string_match(),
            "method": string_match(),
            "authority": string_match(),
            "headers": map_of(string_match()),
            "port": uint32(),
            "sourceLabels": map_of(string()),
            "gateways": strings(),
            "queryParams": map_of(string_match()),
            "ignoreUriCase": boolean(),
            "withoutHeaders": map_of(string_match()),
            "sourceNamespace": string(),
            "statPrefix": string(),
        }
    )


def http_route_destination() -> Schema:
    return obj(
        {"destination": destination(), "weight": int32(), "headers": headers()},
        required=["destination"],
    )


def http_redirect() -> Schema:
    return obj(
        {
            "uri": string(),
            "authority": string(),
            "port": uint32(),
            "derivePort": enum("FROM_PROTOCOL_DEFAULT", "FROM_REQUEST_PORT"),
            "scheme": string(),
            "redirectCode": uint32(),
            "prefixRewrite": string(),
        },
        oneof=("port", "derivePort"),
    )


def http_rewrite() -> Schema:
    return obj(
        {
            "uri": string(),
            "authority": string(),
            "uriRegexRewrite": obj({"match": string(), "rewrite": string()}),
        }
    )


def http_retry() -> Schema:
    return obj(
        {
            "attempts": int32(),
            "perTryTimeout": duration(),
            "retryOn": string(),
            "retryRemoteLocalities": boolean(nullable=True),
            "retryIgnorePreviousHosts": boolean(nullable=True),
            "backoff": duration(),
        }
    )


def fault_injection() -> Schema:
    delay = obj(
        {
            "fixedDelay": duration(),
            "exponentialDelay": duration(),
            "percentage": percent(),
            "percent": int32(),
        },
        oneof=("fixedDelay", "exponentialDelay"),
    )
    abort = obj(
        {
            "httpStatus": int32(),
            "grpcStatus": string(),
            "http2Error": string(),
            "percentage": percent(),
        },
        oneof=("httpStatus", "grpcStatus", "http2Error"),
    )
    return obj({"delay": delay, "abort": abort})


def cors_policy() -> Schema:
    return obj(
        {
            "allowOrigin": strings(),
            "allowOrigins": array(string_match()),
            "allowMethods": strings(),
            "allowHeaders": strings(),
            "exposeHeaders": strings(),
            "maxAge": duration(),
            "allowCredentials": boolean(nullable=True),
            "unmatchedPreflights": enum("UNSPECIFIED", "FORWARD", "IGNORE"),
        }
    )


def http_route() -> Schema:
    return obj(
        {
            "name": string(),
            "match": array(http_match_request()),
            "route": array(http_route_destination()),
            "redirect": http_redirect(),
            "directResponse": obj(
                {
                    "status": uint32(),
                    "body": obj(
                        {"string": string(), "bytes": string(format="byte")},
                        oneof=("string", "bytes"),
                    ),
                },
                required=["status"],
            ),
            "delegate": obj({"name": string(), "namespace": string()}),
            "rewrite": http_rewrite(),
            "timeout": duration(),
            "retries": http_retry(),
            "fault": fault_injection(),
            "mirror": destination(),
            "mirrors": array(
                obj(
                    {"destination": destination(), "percentage": percent()},
                    required=["destination"],
                )
            ),
            "mirrorPercent": uint32(nullable=True),
            "mirror_percent": uint32(nullable=True),
            "mirrorPercentage": percent(),
            "corsPolicy": cors_policy(),
            "headers": headers(),
        }
    )


def route_destination() -> Schema:
    return obj({"destination": destination(), "weight": int32()}, required=["destination"])


def l4_match(*, sni: bool) -> Schema:
    fields = {
        "destinationSubnets": strings(),
        "port": uint32(),
        "sourceLabels": map_of(string()),
        "gateways": strings(),
        "sourceNamespace": string(),
    }
    if sni:
        return obj(fields | {"sniHosts": strings()}, required=["sniHosts"])
    return obj(fields | {"sourceSubnet": string()})


def virtual_service_spec() -> Schema:
    return obj(
        {
            "hosts": strings(),
            "gateways": strings(),
            "http": array(http_route()),
            "tls": array(
                obj(
                    {"match": array(l4_match(sni=True)), "route": array(route_destination())},
                    required=["match"],
                )
            ),
            "tcp": array(
                obj({"match": array(l4_match(sni=False)), "route": array(route_destination())})
            ),
            "exportTo": strings(),
        }
    )


# ------------------------------------------------------------ DestinationRule
def connection_pool() -> Schema:
    tcp = obj(
        {
            "maxConnections": int32(),
            "connectTimeout": duration(),
            "tcpKeepalive": obj({"probes": uint32(), "time": duration(), "interval": duration()}),
            "maxConnectionDuration": duration(),
            "idleTimeout": string(),
        }
    )
    http = obj(
        {
            "http1MaxPendingRequests": int32(),
            "http2MaxRequests": int32(),
            "maxRequestsPerConnection": int32(),
            "maxRetries": int32(),
            "idleTimeout": duration(),
            "h2UpgradePolicy": enum("DEFAULT", "DO_NOT_UPGRADE", "UPGRADE"),
            "useClientProtocol": boolean(),
            "maxConcurrentStreams": int32(),
            "http2KeepAlive": obj({"interval": duration(), "timeout": duration()}),
        }
    )
    return obj({"tcp": tcp, "http": http})


def locality_failover() -> Schema:
    return array(obj({"from": string(), "to": string()}))


def load_balancer() -> Schema:
    cookie = obj(
        {
            "name": string(),
            "path": string(),
            "ttl": string(),
            "attributes": array(obj({"name": string(), "value": string()}, required=["name"])),
        },
        required=["name"],
    )
    consistent_hash = obj(
        {
            "httpHeaderName": string(),
            "httpCookie": cookie,
            "useSourceIp": boolean(),
            "httpQueryParameterName": string(),
            "ringHash": obj({"minimumRingSize": {"type": "integer", "minimum": 0}}),
            "maglev": obj({"tableSize": {"type": "integer", "minimum": 0}}),
            "minimumRingSize": {"type": "integer", "minimum": 0},
        },
        oneofs=[
            ("httpHeaderName", "httpCookie", "useSourceIp", "httpQueryParameterName"),
            ("ringHash", "maglev"),
        ],
    )
    locality = obj(
        {
            "distribute": array(obj({"from": string(), "to": map_of(uint32())})),
            "failover": locality_failover(),
            "failoverPriority": strings(),
            "enabled": boolean(nullable=True),
        }
    )
    zone_aware = obj(
        {
            "enabled": boolean(nullable=True),
            "failover": locality_failover(),
            "failoverPriority": strings(),
            "minClusterSize": {"type": "integer", "minimum": 1, "nullable": True},
        }
    )
    return obj(
        {
            "simple": enum(
                "UNSPECIFIED", "LEAST_CONN", "RANDOM", "PASSTHROUGH", "ROUND_ROBIN", "LEAST_REQUEST"
            ),
            "consistentHash": consistent_hash,
            "localityLbSetting": locality,
            "zoneAwareLbSetting": zone_aware,
            "warmupDurationSecs": duration(),
            "warmup": obj(
                {
                    "duration": duration(),
                    "minimumPercent": double(minimum=0, maximum=100, nullable=True),
                    "aggression": double(minimum=0, nullable=True),
                },
                required=["duration"],
            ),
        },
        oneof=("simple", "consistentHash"),
    )


def outlier_detection() -> Schema:
    return obj(
        {
            "splitExternalLocalOriginErrors": boolean(),
            "consecutiveLocalOriginFailures": uint32(nullable=True),
            "consecutiveGatewayErrors": uint32(nullable=True),
            "consecutive5xxErrors": uint32(nullable=True),
            "interval": duration(),
            "baseEjectionTime": duration(),
            "maxEjectionPercent": int32(),
            "minHealthPercent": int32(),
            "consecutiveErrors": int32(),
            "outlierDetectionHttpErrorCodes": array(
                {"type": "integer", "minimum": 100, "maximum": 599}
            ),
        }
    )


def client_tls() -> Schema:
    return obj(
        {
            "mode": enum("DISABLE", "SIMPLE", "MUTUAL", "ISTIO_MUTUAL"),
            "clientCertificate": string(),
            "privateKey": string(),
            "caCertificates": string(),
            "credentialName": string(),
            "subjectAltNames": strings(),
            "sni": string(),
            "insecureSkipVerify": boolean(nullable=True),
            "caCrl": string(),
        }
    )


def port_traffic_policy() -> Schema:
    return obj(
        {
            "port": port_selector(),
            "loadBalancer": load_balancer(),
            "connectionPool": connection_pool(),
            "outlierDetection": outlier_detection(),
            "tls": client_tls(),
        }
    )


def traffic_policy() -> Schema:
    return obj(
        {
            "loadBalancer": load_balancer(),
            "connectionPool": connection_pool(),
            "outlierDetection": outlier_detection(),
            "tls": client_tls(),
            "portLevelSettings": array(port_traffic_policy(), maxItems=4096),
            "tunnel": obj(
                {"protocol": string(), "targetHost": string(), "targetPort": uint32()},
                required=["targetHost", "targetPort"],
            ),
            "proxyProtocol": obj({"version": enum("V1", "V2")}),
            "retryBudget": obj(
                {
                    "percent": double(minimum=0, maximum=100, nullable=True),
                    "minRetryConcurrency": uint32(),
                    "budgetInterval": string(),
                }
            ),
        }
    )


def workload_selector() -> Schema:
    no_wildcard_keys = {
        "rule": 'self.all(key, !key.contains("*"))',
        "message": "wildcard not allowed in label key match",
    }
    no_empty_keys = {"rule": "self.all(key, key.size() != 0)", "message": "key must not be empty"}
    no_wildcard_value = {
        "rule": '!self.contains("*")',
        "message": "wildcard not allowed in label value match",
    }
    labels = map_of(
        string(maxLength=63, **{"x-kubernetes-validations": [no_wildcard_value]}),
        maxProperties=4096,
        **{"x-kubernetes-validations": [no_wildcard_keys, no_empty_keys]},
    )
    return obj({"matchLabels": labels})


def destination_rule_spec() -> Schema:
    subset = obj(
        {"name": string(), "labels": map_of(string()), "trafficPolicy": traffic_policy()},
        required=["name"],
    )
    return obj(
        {
            "host": string(),
            "trafficPolicy": traffic_policy(),
            "subsets": array(subset),
            "exportTo": strings(),
            "workloadSelector": workload_selector(),
        },
        required=["host"],
    )


# ------------------------------------------------------------- whole objects
def int_or_string() -> Schema:
    return {"anyOf": [{"type": "integer"}, {"type": "string"}], "x-kubernetes-int-or-string": True}


def status_schema() -> Schema:
    # Written by Istio's controllers; typed but open to new fields, as Istio keeps it.
    condition = obj(
        {
            "type": string(),
            "status": string(),
            "reason": string(),
            "message": string(),
            "lastProbeTime": string(format="date-time"),
            "lastTransitionTime": string(format="date-time"),
            "observedGeneration": int_or_string(),
        }
    )
    message = obj(
        {
            "type": obj({"name": string(), "code": string()}),
            "level": enum("UNKNOWN", "ERROR", "WARNING", "INFO"),
            "documentationUrl": string(),
        }
    )
    return {
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": True,
        "properties": {
            "conditions": array(condition),
            "validationMessages": array(message),
            "observedGeneration": int_or_string(),
        },
    }


def resource_schema(kind: str) -> Schema:
    spec = {"VirtualService": virtual_service_spec, "DestinationRule": destination_rule_spec}[
        kind
    ]()
    return {"type": "object", "properties": {"spec": spec, "status": status_schema()}}


KINDS = {"virtualservices": "VirtualService", "destinationrules": "DestinationRule"}


class IstioValidator:
    """Validates Istio objects by plural and API version."""

    def __init__(self, crds_file: str | Path | None = None) -> None:
        self._validators: dict[tuple[str, str], StructuralValidator] = {}
        if crds_file is None:
            for plural, kind in KINDS.items():
                shared = StructuralValidator(resource_schema(kind))
                for version in VERSIONS:
                    self._validators[(plural, version)] = shared
        else:
            self._load_crds(Path(crds_file))
        self.source = str(crds_file) if crds_file else "built-in"

    def _load_crds(self, path: Path) -> None:
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc or doc.get("kind") != "CustomResourceDefinition":
                continue
            spec = doc["spec"]
            if spec.get("group") != GROUP or spec["names"]["plural"] not in KINDS:
                continue
            for version in spec["versions"]:
                if version.get("served", True):
                    schema = version["schema"]["openAPIV3Schema"]
                    key = (spec["names"]["plural"], version["name"])
                    self._validators[key] = StructuralValidator(schema)
        missing = {k for k in KINDS if not any(p == k for p, _ in self._validators)}
        if missing:
            raise ValueError(f"{path}: no CRD for {', '.join(sorted(missing))}")

    def versions(self, plural: str) -> list[str]:
        return [v for p, v in self._validators if p == plural]

    def errors(self, plural: str, version: str, obj: dict[str, Any]) -> list[FieldError]:
        validator = self._validators.get((plural, version))
        if validator is None:
            return [
                FieldError(
                    "apiVersion",
                    "FieldValueNotSupported",
                    f"{GROUP}/{version} is not served for {plural}",
                )
            ]
        return validator.errors(obj)
