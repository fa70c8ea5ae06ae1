"""Checks of single plan values that Kubernetes, Envoy or Prometheus would refuse later.

Each check raises ValueError with a message fit for `PLAN:LINE: field: message`, or returns
the value, so it serves as a pydantic AfterValidator. Found at validate time, a bad value
costs nothing; found by the cluster it fails a release half-way (a host that is not a DNS
name), by Envoy it is a route that never loads (a regex RE2 refuses), and by Prometheus a
pause at 20 % (a query with a stray brace).
"""

from __future__ import annotations

import re
from typing import Any, Literal

MAX_TEXT = 64 * 1024  # any one string of a plan; a manifest or a query fits many times over

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", re.ASCII)
_LABEL_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?", re.ASCII)
_HTTP_URL = re.compile(r"https?://[^\s/]+(/\S*)?", re.ASCII)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


# --- names -------------------------------------------------------------------------------


def dns_subdomain(value: str) -> str:
    """A DNS-1123 subdomain: dot-separated labels, as Kubernetes and Istio hosts are."""
    labels = value.split(".")
    if len(value) > 253 or not all(len(x) <= 63 and _DNS_LABEL.fullmatch(x) for x in labels):
        raise ValueError(
            f"{value!r} is not a DNS-1123 host name (labels of lower-case letters, digits "
            "and '-', each at most 63 characters, joined by single dots)"
        )
    return value


def label_key(value: str) -> str:
    """A Kubernetes label key: an optional DNS subdomain prefix and '/', then a name."""
    prefix, _, name = value.rpartition("/")
    if prefix:
        try:
            dns_subdomain(prefix)
        except ValueError:
            raise ValueError(f"{value!r} is not a label key: bad prefix {prefix!r}") from None
    if len(name) > 63 or not _LABEL_NAME.fullmatch(name):
        raise ValueError(
            f"{value!r} is not a label key (letters, digits, '-', '_' and '.', at most 63, "
            "optionally after a DNS prefix and '/')"
        )
    return value


# --- images: the OCI distribution reference grammar --------------------------------------

_ALNUM = r"[a-z0-9]+"
_PATH_COMPONENT = rf"{_ALNUM}(?:(?:[._]|__|-+){_ALNUM})*"
_PATH = re.compile(rf"{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*", re.ASCII)
_DOMAIN_COMPONENT = r"(?:[A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9])"
_REGISTRY = re.compile(
    rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[0-9A-Fa-f:]+\])(?::[0-9]+)?", re.ASCII
)
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}", re.ASCII)
_DIGEST = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9A-Fa-f]{32,}")


def image_reference(value: str) -> str:
    """An image reference as registries and the kubelet read it: name[:tag][@digest]."""
    if not value:
        raise ValueError("the image is empty")
    if not _is_reference(value):
        raise ValueError(
            f"{value!r} is not an image reference ([registry/]path[:tag][@digest], the "
            "path in lower case)"
        )
    return value


def _is_reference(value: str) -> bool:
    name, _, digest = value.partition("@")
    if digest and not _DIGEST.fullmatch(digest):
        return False
    head, slash, rest = name.partition("/")
    # The first part names a registry when it looks like a host (as container runtimes
    # decide): a dot or a port in it, or localhost.
    registry = slash and ("." in head or ":" in head or head == "localhost")
    if registry and not _REGISTRY.fullmatch(head):
        return False
    path = rest if registry else name
    path, colon, tag = path.rpartition(":") if ":" in path else (path, "", "")
    if colon and not _TAG.fullmatch(tag):
        return False
    return len(name) - len(tag) - len(colon) <= 255 and bool(_PATH.fullmatch(path))


def manifest_problem(manifest: dict[str, Any]) -> tuple[str, str] | None:
    """(field path, message) of the first part of a Deployment manifest a release would
    trip over (its name, the shape it edits, the images), or None."""
    metadata = manifest.get("metadata", {})
    if not isinstance(metadata, dict):
        return "manifest.metadata", "must be a mapping"
    name = metadata.get("name")
    if name is not None and not (
        isinstance(name, str) and len(name) <= 63 and _DNS_LABEL.fullmatch(name)
    ):
        return "manifest.metadata.name", f"{name!r} is not a Kubernetes name"
    spec = manifest.get("spec")
    template = spec.get("template") if isinstance(spec, dict) else None
    pod = template.get("spec") if isinstance(template, dict) else None
    containers = pod.get("containers") if isinstance(pod, dict) else None
    where = "manifest.spec.template.spec.containers"
    if not isinstance(containers, list) or not containers:
        return where, "a Deployment needs at least one container"
    for index, container in enumerate(containers):
        image = container.get("image") if isinstance(container, dict) else None
        try:
            image_reference(image if isinstance(image, str) else "")
        except ValueError as exc:
            return f"{where}[{index}].image", str(exc)
    return None


# --- text that goes into requests ----------------------------------------------------------


def header_value(value: str) -> str:
    if _CONTROL.search(value.replace("\t", "")):
        raise ValueError("a header value cannot hold control characters or line breaks")
    return value


def url_path(value: str) -> str:
    if not value.startswith("/") or re.search(r"[\s\x00-\x1f\x7f]", value):
        raise ValueError(f"{value!r} is not a request path (starts with '/', no spaces)")
    return value


def http_url(value: str) -> str:
    if not _HTTP_URL.fullmatch(value):
        raise ValueError(f"{value!r} is not an http(s) URL")
    return value


# --- regexes: RE2, as Envoy compiles them ---------------------------------------------------


def re2_regex(pattern: str) -> str:
    """A regex RE2 compiles (Envoy compiles Istio's regex matches with RE2)."""
    _compile_re2(pattern)
    return pattern


def _compile_re2(pattern: str):  # -> re2._Regexp
    import re2  # google-re2: loaded only when a plan has a regex

    options = re2.Options()
    options.log_errors = False  # else RE2 writes its own lines to stderr
    try:
        return re2.compile(pattern, options)
    except re2.error as exc:
        reason = exc.args[0].decode() if exc.args and isinstance(exc.args[0], bytes) else exc
        raise ValueError(f"regex {pattern!r} is not valid RE2: {reason}") from None


# Header values of different shapes: a match that takes all of them takes every user.
_SAMPLE_VALUES = ("a", "jason", "Z-9", "0", "~ x.y", "session=0123456789abcdef; lang=en")


def matches_every_value(kind: Literal["exact", "prefix", "regex"], value: str) -> bool:
    """Whether a StringMatch matches any value of a header that is present."""
    if kind == "prefix":
        return value == ""
    if kind == "regex":
        compiled = _compile_re2(value)
        return all(compiled.fullmatch(sample) for sample in _SAMPLE_VALUES)
    return False


# --- PromQL ----------------------------------------------------------------------------------


def promql_query(query: str) -> str:
    """A PromQL expression Prometheus can evaluate to a number per series (not a range)."""
    import promql_parser  # the parser of GreptimeDB, from PyPI; loaded only for queries

    try:
        expression = promql_parser.parse(query)
    except ValueError as exc:
        raise ValueError(f"not valid PromQL: {exc}") from None
    while isinstance(expression, promql_parser.ParenExpr):
        expression = expression.expr
    if isinstance(expression, promql_parser.MatrixSelector | promql_parser.SubqueryExpr):
        raise ValueError("the query gives a range vector; a check needs one value per series")
    if isinstance(expression, promql_parser.StringLiteral):
        raise ValueError("the query gives a string; a check needs a number")
    return query
