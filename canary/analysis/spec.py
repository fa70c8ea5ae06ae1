"""The analysis settings of a release plan: metric checks, the judge, no-data and Prometheus.

Queries are PromQL templates with ``{{ variable }}`` placeholders (Flagger's syntax). The
variables are ``namespace``, ``service``, ``canary`` (the canary workload), ``stable`` (the
stable workload) and ``interval`` (the metric's window, e.g. ``1m``). Every value put into a
query is checked first (Kubernetes names, durations), so a plan cannot inject PromQL.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from typing import Literal

from pydantic import Field, field_validator, model_validator

from canary.durations import Duration, format_duration
from canary.field_checks import promql_query
from canary.models import Model, field_error

SUCCESS_RATE = "request-success-rate"
DURATION = "request-duration"
BUILTIN_METRICS = (SUCCESS_RATE, DURATION)
TEMPLATE_VARIABLES = ("namespace", "service", "canary", "stable", "interval")
DEFAULT_PROMETHEUS_URL = "http://prometheus.istio-system:9090"

_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
_K8S_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_METRIC_NAME = re.compile(r"^[a-z0-9]([-a-z0-9_]{0,61}[a-z0-9])?$")
_BUCKET_BOUND = re.compile(r"^(\+Inf|[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?)$")

# What values a metric can take: a bound outside never holds, or always does.
_MAX_LATENCY_MS = 3_600_000.0  # an hour
_MAX_CUSTOM = 1e15
_VALUE_RANGES = {
    SUCCESS_RATE: (0.0, 100.0, "a success rate (%)"),
    DURATION: (0.0, _MAX_LATENCY_MS, "a p99 duration (ms)"),
}

Direction = Literal["increase", "decrease", "either"]
JudgeKind = Literal["threshold", "mann-whitney", "sequential"]


# --- templates ---------------------------------------------------------------------------


class TemplateError(ValueError):
    """A query template that cannot be rendered safely."""


def template_variables(template: str) -> list[str]:
    """The variables a template uses, in order of first use."""
    seen: list[str] = []
    for name in _PLACEHOLDER.findall(template):
        if name not in seen:
            seen.append(name)
    return seen


def check_template(template: str, allowed: Iterable[str] = TEMPLATE_VARIABLES) -> str:
    """The template itself, or a TemplateError naming the first problem."""
    if not template.strip():
        raise TemplateError("the query is empty")
    allowed = set(allowed)
    for name in template_variables(template):
        if name not in allowed:
            raise TemplateError(f"undefined variable {{{{ {name} }}}}")
    leftover = _PLACEHOLDER.sub("", template)
    if "{{" in leftover or "}}" in leftover:
        raise TemplateError("malformed placeholder; write {{ name }}")
    return template


def render(template: str, values: Mapping[str, str]) -> str:
    """Fill a template; every value must already be safe (see safe_values)."""
    check_template(template, values.keys())
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], template)


def safe_name(value: str, what: str) -> str:
    if not isinstance(value, str) or not _K8S_NAME.fullmatch(value):
        raise TemplateError(f"{what} {value!r} is not a Kubernetes name")
    return value


def safe_window(seconds: float) -> str:
    """A PromQL range duration of whole seconds (at least 1s)."""
    if not seconds >= 1:
        raise TemplateError(f"window {seconds!r}s is shorter than 1s")
    return format_duration(round(seconds))


def safe_bucket_bound(value: str) -> str:
    if not _BUCKET_BOUND.fullmatch(value):
        raise TemplateError(f"histogram bucket bound {value!r} is not a number")
    return value


def safe_values(namespace: str, service: str, canary: str, stable: str) -> dict[str, str]:
    """The checked names every query may use; ``interval`` is added per query."""
    return {
        "namespace": safe_name(namespace, "namespace"),
        "service": safe_name(service, "service"),
        "canary": safe_name(canary, "canary workload"),
        "stable": safe_name(stable, "stable workload"),
    }


_SAMPLE_VALUES = {**safe_values("default", "service", "canary", "stable"), "interval": "1m"}

# --- models ------------------------------------------------------------------------------


class ThresholdRange(Model):
    """Flagger's thresholdRange: the canary's value must lie in [min, max]."""

    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _bounds(self) -> ThresholdRange:
        if self.min is None and self.max is None:
            raise ValueError("give min, max or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is above max ({self.max})")
        return self

    def holds(self, value: float) -> bool:
        return (self.min is None or value >= self.min) and (self.max is None or value <= self.max)


class MetricCheck(Model):
    """One metric checked every interval."""

    name: str = Field(description="request-success-rate, request-duration, or a custom name.")
    threshold_range: ThresholdRange | None = None
    query: str | None = Field(None, description="PromQL template of a custom metric (canary).")
    stable_query: str | None = Field(
        None, description="The same custom metric for the stable workload (mann-whitney)."
    )
    interval: Duration | None = Field(None, description="The query window; analysis.interval.")
    critical: bool = Field(False, description="Mann-Whitney: a failing critical metric fails all.")
    weight: float = Field(
        1.0, gt=0, le=100, description="Mann-Whitney: the metric's share of the score."
    )
    direction: Direction | None = Field(
        None, description="Which change is a regression; built-ins know theirs, custom: either."
    )

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _METRIC_NAME.fullmatch(value):
            raise ValueError(
                f"{value!r} is not a metric name (lower-case letters, digits, '-' and '_')"
            )
        return value

    @field_validator("query", "stable_query")
    @classmethod
    def _template(cls, value: str | None) -> str | None:
        if value is None:
            return None
        # Parsed as Prometheus would parse it, filled with names of the same shape.
        promql_query(render(check_template(value), _SAMPLE_VALUES))
        return value

    @field_validator("interval")
    @classmethod
    def _interval(cls, value: float | None) -> float | None:
        if value is not None and value < 1:
            raise ValueError("must be at least 1s")
        return value

    @model_validator(mode="after")
    def _builtin_or_custom(self) -> MetricCheck:
        if self.builtin and (self.query or self.stable_query):
            raise ValueError(f"{self.name} is built in; remove query or choose another name")
        if not self.builtin and not self.query:
            raise ValueError(
                f"{self.name!r} is not a built-in metric ({', '.join(BUILTIN_METRICS)}); "
                "give its query"
            )
        return self

    @property
    def builtin(self) -> bool:
        return self.name in BUILTIN_METRICS

    @property
    def bad_direction(self) -> Direction:
        if self.direction is not None:
            return self.direction
        return {SUCCESS_RATE: "decrease", DURATION: "increase"}.get(self.name, "either")


class JudgeSpec(Model):
    """How checks are judged: Flagger's thresholds, Kayenta-style Mann-Whitney, or sequential."""

    kind: JudgeKind = "threshold"
    confidence: float = Field(
        0.98,
        gt=0.5,
        lt=1,
        description="How sure the counts must be that a built-in metric breached its "
        "thresholdRange (threshold, mann-whitney); Mann-Whitney's interval.",
    )
    # mann-whitney
    effect_size_tolerance: float = Field(0.25, ge=0, le=100)
    pass_score: float = Field(95.0, ge=0, le=100)
    marginal_score: float = Field(75.0, ge=0, le=100)
    min_samples: int = Field(5, ge=2, le=1000, description="Windows per side before a comparison.")
    lookback: Duration | None = Field(None, description="Default: since the analysis began.")
    # sequential
    alpha: float = Field(0.01, gt=0, lt=0.5, description="Bound on the false-rollback rate.")
    prior_scale: float = Field(
        1.5, gt=0, le=10, description="Spread of the prior on the log rate ratio."
    )
    latency_threshold_ms: float | None = Field(
        None,
        gt=0,
        le=_MAX_LATENCY_MS,
        description="Slow means above this; default: the stable's p99 bucket.",
    )
    detectable_points: float = Field(
        1.0,
        gt=0,
        le=100,
        description="A step's traffic supports a decision when a canary this many percentage "
        "points worse than the stable would have been caught; else a person decides.",
    )

    @model_validator(mode="after")
    def _bands(self) -> JudgeSpec:
        if self.marginal_score > self.pass_score:
            raise ValueError("marginalScore must not be above passScore")
        return self


class NoDataSpec(Model):
    """What a check without enough traffic means."""

    min_requests: int = Field(
        20, ge=0, le=10**9, description="Canary requests per interval to judge."
    )
    on_no_data: Literal["hold", "pause", "fail"] = "hold"


class PrometheusSpec(Model):
    url: str | None = Field(None, description="Default: $PROMETHEUS_URL, then Istio's.")
    timeout: Duration = 5.0
    retries: int = Field(3, ge=0, le=10)
    on_unreachable: Literal["pause", "rollback"] = "pause"

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"^https?://[^\s/]+(/\S*)?$", value):
            raise ValueError(f"{value!r} is not an http(s) URL")
        return value

    def resolved_url(self) -> str:
        return self.url or os.environ.get("PROMETHEUS_URL") or DEFAULT_PROMETHEUS_URL


# --- cross-field checks -------------------------------------------------------------------


def check_analysis(
    metrics: list[MetricCheck], judge: JudgeSpec, threshold: int, max_failures: int | None
) -> None:
    """Checks that need the whole analysis section; errors name the field."""
    if max_failures is not None and max_failures < threshold:
        raise field_error(
            "maxFailures", f"must be at least threshold ({threshold}), or threshold never applies"
        )
    names: set[str] = set()
    for index, metric in enumerate(metrics):
        if metric.name in names:
            raise field_error(f"metrics[{index}].name", f"{metric.name!r} is checked twice")
        names.add(metric.name)
        problem = _range_problem(metric)
        if problem is not None:
            raise field_error(f"metrics[{index}].thresholdRange.{problem[0]}", problem[1])
        if metric.threshold_range is None and not compared(metric, judge.kind):
            raise field_error(
                f"metrics[{index}].thresholdRange",
                f"the {judge.kind} judge checks this metric against a thresholdRange; give one",
            )


def _range_problem(metric: MetricCheck) -> tuple[str, str] | None:
    """(min or max, message) for a bound the metric can never reach or pass."""
    low, high, what = _VALUE_RANGES.get(metric.name, (-_MAX_CUSTOM, _MAX_CUSTOM, "a custom bound"))
    bounds = metric.threshold_range
    for side in ("min", "max"):
        value = getattr(bounds, side) if bounds is not None else None
        if value is not None and not low <= value <= high:
            return side, f"{value:g} is out of range: {what} lies in [{low:g}, {high:g}]"
    return None


def compared(metric: MetricCheck, kind: JudgeKind) -> bool:
    """Whether the judge compares canary with stable for this metric (else: thresholdRange)."""
    if kind == "mann-whitney":
        return metric.builtin or metric.stable_query is not None
    if kind == "sequential":
        return metric.builtin
    return False


def window_of(metric: MetricCheck, default_interval: float) -> float:
    return metric.interval if metric.interval is not None else default_interval
