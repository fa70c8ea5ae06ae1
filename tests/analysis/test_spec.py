"""The analysis fields of a plan: defaults, field-named errors, and no PromQL injection."""

from __future__ import annotations

import textwrap

import pytest

from canary.analysis.istio_metrics import TEMPLATES
from canary.analysis.spec import (
    TEMPLATE_VARIABLES,
    TemplateError,
    check_template,
    render,
    safe_values,
    safe_window,
    template_variables,
)
from canary.plan import AnalysisSpec, PlanError, parse_plan

PLAN = """\
service: reviews
stable: {version: v1}
canary: {version: v2, image: example/reviews:v2}
analysis:
"""


def plan_error(analysis: str) -> str:
    with pytest.raises(PlanError) as caught:
        parse_plan(PLAN + textwrap.indent(textwrap.dedent(analysis), "  "))
    return str(caught.value)


def test_defaults():
    a = AnalysisSpec()
    assert a.metrics == [] and a.judge.kind == "threshold"
    assert a.failure_limit == a.threshold == 1
    assert (a.judge.confidence, a.judge.effect_size_tolerance) == (0.98, 0.25)
    assert (a.judge.pass_score, a.judge.marginal_score, a.judge.alpha) == (95, 75, 0.01)
    assert (a.no_data.min_requests, a.no_data.on_no_data) == (20, "hold")
    p = a.prometheus
    assert (p.timeout, p.retries, p.on_unreachable) == (5.0, 3, "pause")


def test_a_full_analysis_section_parses():
    plan = parse_plan(
        PLAN
        + textwrap.indent(
            textwrap.dedent("""\
        interval: 30s
        threshold: 2
        maxFailures: 4
        stepWeights: [10, 50]
        metrics:
          - name: request-success-rate
            thresholdRange: {min: 99}
          - name: request-duration
            thresholdRange: {max: 500}
            interval: 1m
          - name: queue-depth
            query: 'max(queue{namespace="{{ namespace }}",pod=~"{{ canary }}-.*"})'
            stableQuery: 'max(queue{namespace="{{ namespace }}",pod=~"{{ stable }}-.*"})'
            critical: true
            weight: 2
            direction: increase
        judge: {kind: mann-whitney, confidence: 0.99, passScore: 90, marginalScore: 60}
        noData: {minRequests: 50, onNoData: pause}
        prometheus: {url: "http://127.0.0.1:9090", timeout: 2s, retries: 1,
                     onUnreachable: rollback}
    """),
            "  ",
        )
    )
    a = plan.analysis
    assert a.failure_limit == 4 and a.metrics[1].interval == 60
    assert a.metrics[2].critical and a.metrics[2].bad_direction == "increase"
    assert a.metrics[0].bad_direction == "decrease" and a.metrics[1].bad_direction == "increase"
    assert a.prometheus.resolved_url() == "http://127.0.0.1:9090"


def test_prometheus_url_falls_back_to_the_environment(monkeypatch):
    monkeypatch.setenv("PROMETHEUS_URL", "http://127.0.0.1:9999")
    assert AnalysisSpec().prometheus.resolved_url() == "http://127.0.0.1:9999"


@pytest.mark.parametrize(
    ("analysis", "expected"),
    [
        (
            "metrics: [{name: x, query: 'up{ns=\"{{ foo }}\"}', thresholdRange: {max: 1}}]",
            "analysis.metrics[0].query: undefined variable {{ foo }}",
        ),
        (
            "metrics: [{name: x, query: 'up{ns=\"{{ namespace }\"}', thresholdRange: {max: 1}}]",
            "analysis.metrics[0].query: malformed placeholder",
        ),
        (
            "metrics: [{name: x, query: 'up', stableQuery: '{{ version }}', "
            "thresholdRange: {max: 1}}]",
            "analysis.metrics[0].stableQuery: undefined variable {{ version }}",
        ),
        (
            "metrics: [{name: request-success-rate}]",
            "analysis.metrics[0].thresholdRange: the threshold judge checks this metric",
        ),
        (
            "{judge: {kind: sequential}, metrics: [{name: errors, query: up}]}",
            "analysis.metrics[0].thresholdRange: the sequential judge",
        ),
        (
            "metrics: [{name: request-duration, query: up}]",
            "analysis.metrics[0]: request-duration is built in",
        ),
        ("metrics: [{name: latency}]", "analysis.metrics[0]: 'latency' is not a built-in metric"),
        (
            "metrics: [{name: Latency!, query: up, thresholdRange: {max: 1}}]",
            "analysis.metrics[0].name: 'Latency!' is not a metric name",
        ),
        (
            "metrics: [{name: request-duration, thresholdRange: {min: 5, max: 1}}]",
            "analysis.metrics[0].thresholdRange: min (5.0) is above max (1.0)",
        ),
        (
            "metrics: [{name: request-duration, thresholdRange: {}}]",
            "analysis.metrics[0].thresholdRange: give min, max or both",
        ),
        (
            "metrics: [{name: request-duration, thresholdRange: {max: 1}, interval: 500ms}]",
            "analysis.metrics[0].interval: must be at least 1s",
        ),
        (
            "metrics: [{name: request-duration, thresholdRange: {max: 1}, bogus: 1}]",
            "analysis.metrics[0].bogus: unknown field",
        ),
        (
            "metrics: [{name: request-duration, thresholdRange: {max: 1}}, "
            "{name: request-duration, thresholdRange: {max: 2}}]",
            "analysis.metrics[1].name: 'request-duration' is checked twice",
        ),
        ("{threshold: 3, maxFailures: 2}", "analysis.maxFailures: must be at least threshold"),
        ("judge: {kind: bayes}", "analysis.judge.kind: Input should be"),
        (
            "judge: {passScore: 70, marginalScore: 80}",
            "analysis.judge: marginalScore must not be above passScore",
        ),
        ("judge: {alpha: 0.9}", "analysis.judge.alpha: Input should be less than 0.5"),
        ("noData: {onNoData: ignore}", "analysis.noData.onNoData: Input should be"),
        ("prometheus: {url: 'ftp://x'}", "analysis.prometheus.url: 'ftp://x' is not an http"),
        ("prometheus: {onUnreachable: continue}", "analysis.prometheus.onUnreachable"),
    ],
)
def test_bad_analysis_fields_are_named(analysis, expected):
    assert expected in plan_error(analysis)


def test_comparative_judges_need_no_threshold_range_for_what_they_compare():
    AnalysisSpec.model_validate(
        {
            "judge": {"kind": "mann-whitney"},
            "metrics": [
                {"name": "request-success-rate"},
                {"name": "queue", "query": 'q{ns="{{ namespace }}"}', "stableQuery": "q"},
            ],
        }
    )
    AnalysisSpec.model_validate(
        {"judge": {"kind": "sequential"}, "metrics": [{"name": "request-duration"}]}
    )


# --- templates ------------------------------------------------------------------------


def test_templates_use_only_known_variables():
    for name, template in TEMPLATES.items():
        extra = ("le",) if "slow" in name else ()
        check_template(template, (*TEMPLATE_VARIABLES, *extra))
    assert template_variables("{{a}} {{ b }} {{a}}") == ["a", "b"]


def test_builtin_queries_select_the_workload_like_flagger():
    values = {**safe_values("shop", "reviews", "reviews-v2", "reviews-v1"), "interval": "1m"}
    rate = render(TEMPLATES["request-success-rate"], values)
    assert 'reporter="destination"' in rate and 'destination_workload="reviews-v2"' in rate
    assert 'destination_workload_namespace="shop"' in rate and "[1m]" in rate
    assert 'response_code!~"5.*"' in rate and rate.endswith("* 100")
    duration = render(TEMPLATES["stable-request-duration"], values)
    assert duration.startswith("histogram_quantile(0.99, sum by (le)")
    assert "istio_request_duration_milliseconds_bucket" in duration and "reviews-v1" in duration


@pytest.mark.parametrize(
    "bad",
    ['default"} or vector(1) #', "default\n", "a b", "UPPER", "-lead", 'x"', "{{ canary }}"],
)
def test_values_that_could_inject_promql_are_refused(bad):
    with pytest.raises(TemplateError):
        safe_values(bad, "reviews", "reviews-v2", "reviews-v1")
    with pytest.raises(TemplateError):
        safe_values("default", "reviews", "reviews-v2", bad)


def test_render_refuses_unknown_variables_and_windows_are_whole_seconds():
    with pytest.raises(TemplateError, match="undefined variable"):
        render("{{ canary }}", {"stable": "x"})
    assert safe_window(60) == "1m" and safe_window(90.4) == "90s"
    with pytest.raises(TemplateError):
        safe_window(0.5)
