"""The release plan: one YAML file, validated by these pydantic models.

Field names follow Flagger's where the meaning is the same (interval, threshold,
stepWeights, stepWeight, maxWeight, match, thresholdRange).
"""

from __future__ import annotations

import itertools
import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    Field,
    model_validator,
)

from canary.analysis.spec import JudgeSpec, MetricCheck, NoDataSpec, PrometheusSpec, check_analysis
from canary.approvals.spec import Gate, Notifications, gate_problems
from canary.durations import duration_between
from canary.field_checks import (
    dns_subdomain,
    header_value,
    http_url,
    image_reference,
    label_key,
    manifest_problem,
    matches_every_value,
    re2_regex,
    url_path,
)
from canary.models import Model, field_error

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")
_HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")


def _dns_label(value: str) -> str:
    if not _DNS1123_LABEL.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a Kubernetes name (lower-case letters, digits and '-', "
            "starting and ending with a letter or digit, at most 63 characters)"
        )
    return value


def _label_value(value: str) -> str:
    if not value or not _LABEL_VALUE.fullmatch(value):
        raise ValueError(f"{value!r} is not a Kubernetes label value")
    return value


def _header_name(value: str) -> str:
    if not _HEADER_NAME.fullmatch(value):
        raise ValueError(f"{value!r} is not an HTTP header name")
    return value.lower()


Name = Annotated[str, AfterValidator(_dns_label)]
Host = Annotated[str, AfterValidator(dns_subdomain)]
LabelValue = Annotated[str, AfterValidator(_label_value)]
LabelKey = Annotated[str, AfterValidator(label_key)]
HeaderName = Annotated[str, AfterValidator(_header_name)]
HeaderValue = Annotated[str, AfterValidator(header_value)]
Image = Annotated[str, AfterValidator(image_reference)]
Weight = Annotated[int, Field(gt=0, lt=100)]
# Bounds on the durations a release waits (every Duration is at most a week anyway).
Hold = duration_between(0, 24 * 3600)
Interval = duration_between(1, 3600)
Readiness = duration_between(1, 24 * 3600)
CheckTimeout = duration_between(0.001, 600)
PauseLimit = duration_between(1)
CommandTimeout = duration_between(0.001, 3600)


# --- Istio's HTTPMatchRequest, the subset a release needs ----------------------------


class StringMatch(Model):
    """Istio's StringMatch: exactly one of exact, prefix or regex."""

    exact: HeaderValue | None = None
    prefix: HeaderValue | None = None
    regex: Annotated[str, AfterValidator(re2_regex)] | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> StringMatch:
        given = [k for k in ("exact", "prefix", "regex") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of exact, prefix or regex")
        return self

    def matches_every_value(self) -> bool:
        kind = next(k for k in ("exact", "prefix", "regex") if getattr(self, k) is not None)
        return matches_every_value(kind, getattr(self, kind))


class HttpMatch(Model):
    """Istio's HTTPMatchRequest: headers and uri; cookies are a regex on the cookie header."""

    headers: dict[HeaderName, StringMatch] = Field(default_factory=dict)
    uri: StringMatch | None = None

    @model_validator(mode="after")
    def _on_a_header(self) -> HttpMatch:
        # A match on the uri alone (or on nothing) takes every user, not a chosen few.
        if not self.headers:
            raise ValueError(
                "a match needs a header or a cookie (headers); without one every user "
                "would reach the canary"
            )
        for name, value in self.headers.items():
            if value.matches_every_value():
                raise field_error(
                    f"headers.{name}", "matches every value, so every user would reach the canary"
                )
        return self


# --- Versions and routing -------------------------------------------------------------


class StableSpec(Model):
    version: LabelValue
    deployment: Name | None = Field(None, description="Default: SERVICE-VERSION, e.g. reviews-v1.")


class CanarySpec(Model):
    version: LabelValue
    image: Image | None = Field(None, description="Clone the stable Deployment with this image.")
    manifest: dict[str, Any] | None = Field(None, description="A full Deployment manifest.")
    deployment: Name | None = Field(None, description="Default: SERVICE-VERSION, e.g. reviews-v2.")

    @model_validator(mode="after")
    def _image_or_manifest(self) -> CanarySpec:
        if (self.image is None) == (self.manifest is None):
            raise ValueError("give the canary as either image or manifest")
        if self.manifest is not None and self.manifest.get("kind") != "Deployment":
            raise field_error("manifest.kind", "the manifest must be a Deployment")
        if self.manifest is not None:
            problem = manifest_problem(self.manifest)
            if problem is not None:
                raise field_error(*problem)
        return self


ISTIO = "istio"
GATEWAY_API = "gateway-api"
_SERVICE_NAME = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")  # DNS-1035, as Services need
_RULE_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_ISTIO_ONLY = {"virtual_service": "VirtualService", "destination_rule": "DestinationRule"}
_GATEWAY_API_ONLY = ("http_route", "port", "stable_service", "canary_service")
# An HTTPRoute path of type Exact or PathPrefix (the CRD's validation rules).
_ROUTE_PATH = re.compile(r"^/(?:[-A-Za-z0-9/._~!$&'()*+,;=:@]|%[0-9a-fA-F]{2})*$")
_ROUTE_PATH_REFUSED = ("//", "/./", "/../", "%2f", "%2F", "#")
MAX_MATCHES_PER_RULE = 64  # an HTTPRoute rule's matches (the CRD's maxItems)


def _service_name(value: str) -> str:
    if not _SERVICE_NAME.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a Service name (lower-case letters, digits and '-', starting "
            "with a letter, at most 63 characters)"
        )
    return value


ServiceName = Annotated[str, AfterValidator(_service_name)]


class RoutingSpec(Model):
    provider: Literal["istio", "gateway-api"] = Field(
        ISTIO,
        description="The traffic API: Istio's VirtualService and DestinationRule, or the "
        "Kubernetes Gateway API's HTTPRoute with one Service per version.",
    )
    virtual_service: Name | None = Field(None, description="Defaults to the service name.")
    destination_rule: Name | None = Field(None, description="Defaults to the service name.")
    host: Host | None = Field(None, description="The VirtualService host; defaults to service.")
    http_route: Name | None = Field(None, description="gateway-api: defaults to the service name.")
    port: int | None = Field(
        None, ge=1, le=65535, description="gateway-api: the Service port the HTTPRoute routes."
    )
    stable_service: ServiceName | None = Field(
        None, description="gateway-api: the stable version's Service; default SERVICE-VERSION."
    )
    canary_service: ServiceName | None = Field(
        None, description="gateway-api: the canary version's Service; default SERVICE-VERSION."
    )
    version_label: LabelKey = Field("version", description="Pod label that tells versions apart.")
    routes: list[str] = Field(
        default_factory=list,
        description="Names of the http routes to split; default: every route to the host.",
    )

    @model_validator(mode="after")
    def _fields_of_the_provider(self) -> RoutingSpec:
        if self.provider == ISTIO:
            for name in _GATEWAY_API_ONLY:
                if getattr(self, name) is not None:
                    raise field_error(_camel(name), "only for provider: gateway-api")
            return self
        for name, kind in _ISTIO_ONLY.items():
            if getattr(self, name) is not None:
                raise field_error(
                    _camel(name),
                    f"a gateway-api plan has no {kind}: the HTTPRoute's backends are one "
                    "Service per version (routing.stableService, routing.canaryService)",
                )
        if self.host is not None:
            raise field_error(
                "host", "a gateway-api plan routes the Service itself (its parent); remove host"
            )
        if self.port is None:
            raise field_error(
                "port", "a gateway-api plan needs the Service port its HTTPRoute routes (e.g. 9080)"
            )
        for index, name in enumerate(self.routes):
            if not _RULE_NAME.fullmatch(name) or len(name) > 253:
                raise field_error(f"routes[{index}]", f"{name!r} cannot name an HTTPRoute rule")
        return self


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _check_gateway_api(plan: ReleasePlan) -> None:
    """What an HTTPRoute and per-version Services need of a plan beyond the routing spec."""
    versions = {"stable": plan.stable.version, "canary": plan.canary.version}
    services = {"stable": plan.stable_service, "canary": plan.canary_service}
    for role, service in services.items():
        given = getattr(plan.routing, f"{role}_service")
        if given is None and not _SERVICE_NAME.fullmatch(service):
            raise field_error(
                f"{role}.version",
                f"{service!r} (<service>-<version>) is not a Service name; give "
                f"routing.{role}Service",
            )
        if service in versions.values():
            raise field_error(
                f"routing.{role}Service",
                f"{service!r} is a version (a DestinationRule subset name); an HTTPRoute "
                f"backend is a Service, e.g. {plan.service}-{versions[role]}",
            )
        if service == plan.service:
            raise field_error(
                f"routing.{role}Service",
                f"{service!r} is the routed Service itself (the HTTPRoute's parent); give the "
                "Service of one version",
            )
    if services["stable"] == services["canary"]:
        raise field_error("routing.canaryService", "must differ from routing.stableService")
    if plan.header_route is not None:
        _check_route_matches(plan.header_route.match)


def _check_route_matches(matches: list[HttpMatch]) -> None:
    if len(matches) > MAX_MATCHES_PER_RULE:
        raise field_error(
            "headerRoute.match", f"an HTTPRoute rule holds at most {MAX_MATCHES_PER_RULE} matches"
        )
    for index, match in enumerate(matches):
        where = f"headerRoute.match[{index}]"
        for name, value in match.headers.items():
            if value.prefix is not None:
                raise field_error(
                    f"{where}.headers.{name}",
                    "an HTTPRoute matches a header exactly or by regex; give exact or regex",
                )
            if not (value.exact or value.regex):
                raise field_error(f"{where}.headers.{name}", "an HTTPRoute header value is empty")
        uri = match.uri
        path = uri.exact if uri is not None and uri.exact is not None else None
        path = uri.prefix if uri is not None and uri.prefix is not None else path
        if path is not None and (
            not _ROUTE_PATH.fullmatch(path)
            or any(bad in path for bad in _ROUTE_PATH_REFUSED)
            or path.endswith(("/.", "/.."))
        ):
            raise field_error(
                f"{where}.uri",
                f"{path!r} is not an HTTPRoute path (absolute, no '//', '/./', '/../', "
                "'%2f' or '#')",
            )


# --- Phases ---------------------------------------------------------------------------


class HttpCheck(Model):
    name: str
    method: Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"] = "GET"
    path: Annotated[str, AfterValidator(url_path)] = "/"
    headers: dict[HeaderName, HeaderValue] = Field(default_factory=dict)
    body: str | None = None
    expect_status: int = Field(200, ge=100, le=599)
    body_contains: str | None = None
    count: int = Field(1, ge=1, le=10_000)
    max_failures: int = Field(0, ge=0, le=10_000)
    timeout: CheckTimeout = 5.0

    @model_validator(mode="after")
    def _failures_below_count(self) -> HttpCheck:
        if self.max_failures >= self.count:
            raise field_error("maxFailures", "must be below count, or the check cannot fail")
        return self


class CommandCheck(Model):
    name: str
    run: str = Field(description="A shell command; exit 0 passes.")
    timeout: CommandTimeout = 60.0


class TestsSpec(Model):
    header: HeaderName = Field(
        "x-canary-test", description="Requests with this header set to the run id reach the canary."
    )
    base_url: Annotated[str, AfterValidator(http_url)] | None = Field(
        None,
        description="Where checks are sent; default: the service in the cluster, on port.",
    )
    port: int = Field(80, ge=1, le=65535)
    checks: list[HttpCheck] = Field(default_factory=list, max_length=100)
    commands: list[CommandCheck] = Field(default_factory=list, max_length=100)


class HeaderRouteSpec(Model):
    match: list[HttpMatch] = Field(min_length=1, max_length=100)
    hold: Hold = 0.0


class Step(Model):
    weight: Weight
    hold: Hold | None = Field(None, description="Defaults to analysis.interval.")


class AnalysisSpec(Model):
    interval: Interval = Field(60.0, description="How often checks run; also the default hold.")
    threshold: int = Field(1, ge=1, le=1000, description="Failed checks in a row that roll back.")
    max_failures: int | None = Field(
        None, ge=1, le=1000, description="Failed checks in all that roll back; default threshold."
    )
    step_weights: list[Weight] | None = Field(None, min_length=1, max_length=99)
    step_weight: Weight | None = None
    max_weight: Weight | None = None
    metrics: list[MetricCheck] = Field(default_factory=list, max_length=100)
    judge: JudgeSpec = Field(default_factory=JudgeSpec)
    no_data: NoDataSpec = Field(default_factory=NoDataSpec)
    prometheus: PrometheusSpec = Field(default_factory=PrometheusSpec)

    @model_validator(mode="after")
    def _one_step_form(self) -> AnalysisSpec:
        if self.step_weights is not None and self.step_weight is not None:
            raise field_error("stepWeight", "give stepWeights or stepWeight, not both")
        if self.step_weight is not None and self.max_weight is None:
            raise field_error("maxWeight", "stepWeight needs maxWeight")
        if self.step_weight is not None and self.max_weight < self.step_weight:
            raise field_error(
                "stepWeight",
                f"is above maxWeight ({self.step_weight} > {self.max_weight}): not one step",
            )
        _increasing("stepWeights", self.step_weights or [])
        check_analysis(self.metrics, self.judge, self.threshold, self.max_failures)
        return self

    @property
    def failure_limit(self) -> int:
        """Failed checks in all that roll back (Flagger counts them cumulatively)."""
        return self.max_failures if self.max_failures is not None else self.threshold


def _increasing(path: str, weights: list[int]) -> None:
    for index, (before, after) in enumerate(itertools.pairwise(weights), start=1):
        if after <= before:
            raise field_error(f"{path}[{index}]", f"weights must increase ({after} after {before})")


class PromotionSpec(Model):
    hold: Hold = Field(0.0, description="How long 100% on the canary is watched.")


class CleanupSpec(Model):
    action: Literal["delete", "scaleToZero"] = "delete"
    delay: Hold = 0.0


class RollbackSpec(Model):
    canary_action: Literal["delete", "scaleToZero"] = "delete"
    after_promotion: Literal["hold", "recreate"] = Field(
        "hold",
        description="When the stable Deployment is gone: hold traffic on the canary, or "
        "recreate stable from the manifest recorded at deploy and move traffic back.",
    )


class PauseSpec(Model):
    """What an operator's pause (`canary pause`, the Slack thread's Pause button) may do."""

    max_duration: PauseLimit | None = Field(
        None,
        description="The longest a release may stay paused; past it, it rolls back. "
        "Default: no limit, paused until resumed.",
    )


class TimeoutsSpec(Model):
    readiness: Readiness = Field(600.0, description="Deadline for the canary to become ready.")


class ScheduleSpec(Model):
    """The version waiting for the release train (the `release-train` Prefect deployment)."""

    pending_version: LabelValue = Field(
        description="The version the release train releases next; nothing is pending while "
        "it equals stable.version."
    )
    pending_image: Image | None = Field(
        None,
        description="Its image; default: canary.image (then pendingVersion must be "
        "canary.version).",
    )


def _check_schedule(schedule: ScheduleSpec, stable: StableSpec, canary: CanarySpec) -> None:
    """A pending version must come with its own image unless it is the canary as written."""
    if schedule.pending_image is not None and canary.manifest is not None:
        raise field_error(
            "schedule.pendingImage", "the canary is a manifest; put the image in the manifest"
        )
    if (
        schedule.pending_image is None
        and canary.image is not None
        and schedule.pending_version not in (canary.version, stable.version)
    ):
        raise field_error(
            "schedule.pendingImage",
            f"give the image of {schedule.pending_version} (canary.image is the image of "
            f"{canary.version})",
        )


class ReleasePlan(Model):
    """A canary release of one service from its stable version to a canary version."""

    namespace: Name = "default"
    service: Name
    stable: StableSpec
    canary: CanarySpec
    routing: RoutingSpec = Field(default_factory=RoutingSpec)
    tests: TestsSpec = Field(default_factory=TestsSpec)
    header_route: HeaderRouteSpec | None = None
    analysis: AnalysisSpec = Field(default_factory=AnalysisSpec)
    steps: list[Step] | None = Field(None, min_length=1, max_length=99)
    promotion: PromotionSpec = Field(default_factory=PromotionSpec)
    cleanup: CleanupSpec = Field(default_factory=CleanupSpec)
    rollback: RollbackSpec = Field(default_factory=RollbackSpec)
    timeouts: TimeoutsSpec = Field(default_factory=TimeoutsSpec)
    pause: PauseSpec = Field(default_factory=PauseSpec, description="Operator pauses.")
    gates: list[Gate] = Field(default_factory=list, max_length=100, description="Human approvals.")
    notifications: Notifications = Field(default_factory=Notifications)
    schedule: ScheduleSpec | None = Field(None, description="A version for the release train.")

    @model_validator(mode="after")
    def _consistent(self) -> ReleasePlan:
        if self.stable.version == self.canary.version:
            raise field_error("canary.version", "must differ from stable.version")
        if self.steps is not None and (
            self.analysis.step_weights is not None or self.analysis.step_weight is not None
        ):
            raise field_error("steps", "give steps or analysis.stepWeights/stepWeight, not both")
        _increasing("steps", [s.weight for s in self.steps or []])
        problems = gate_problems(self.gates, self._gate_places())
        if problems:
            raise field_error(*problems[0])
        if self.schedule is not None:
            _check_schedule(self.schedule, self.stable, self.canary)
        if self.routing.provider == GATEWAY_API:
            _check_gateway_api(self)
        return self

    def _gate_places(self) -> list[str]:
        # The planner's phases a gate may stand before (the planner imports this module).
        header = ["header-route"] if self.header_route is not None else []
        steps = [f"step-{i}" for i in range(1, len(self.weighted_steps()) + 1)]
        return [*header, *steps, "promote", "cleanup"]

    # --- derived names ---------------------------------------------------------------

    @property
    def host(self) -> str:
        return self.routing.host or self.service

    @property
    def virtual_service(self) -> str:
        return self.routing.virtual_service or self.service

    @property
    def destination_rule(self) -> str:
        return self.routing.destination_rule or self.service

    @property
    def http_route(self) -> str:
        return self.routing.http_route or self.service

    @property
    def stable_service(self) -> str:
        """gateway-api: the Service of the stable version, an HTTPRoute backend."""
        return self.routing.stable_service or f"{self.service}-{self.stable.version}"

    @property
    def canary_service(self) -> str:
        """gateway-api: the Service of the canary version, an HTTPRoute backend."""
        return self.routing.canary_service or f"{self.service}-{self.canary.version}"

    @property
    def stable_deployment(self) -> str:
        return self.stable.deployment or f"{self.service}-{self.stable.version}"

    @property
    def canary_deployment(self) -> str:
        manifest_name = (self.canary.manifest or {}).get("metadata", {}).get("name")
        return self.canary.deployment or manifest_name or f"{self.service}-{self.canary.version}"

    def weighted_steps(self) -> list[Step]:
        """The weighted steps in order, whichever form the plan used."""
        if self.steps is not None:
            return list(self.steps)
        a = self.analysis
        if a.step_weights is not None:
            return [Step(weight=w) for w in a.step_weights]
        if a.step_weight is not None and a.max_weight is not None:
            return [Step(weight=w) for w in range(a.step_weight, a.max_weight + 1, a.step_weight)]
        return []

    def hold_of(self, step: Step) -> float:
        return self.analysis.interval if step.hold is None else step.hold
