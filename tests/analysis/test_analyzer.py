"""The analyzer's decisions: failed checks in a row and in all, no data, Prometheus down."""

from __future__ import annotations

import json

import pytest

from canary.analysis.analyzer import Analyzer, Decision
from canary.analysis.judges import Verdict
from canary.analysis.spec import TemplateError
from canary.plan import AnalysisSpec

from .fakes import FakeMesh, Workload

CANARY, STABLE = "reviews-v2", "reviews-v1"


class Clock:
    def __init__(self, start: float = 1_700_000_000.0, step: float = 60.0):
        self.now, self.step = start, step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def analysis(**fields) -> AnalysisSpec:
    fields.setdefault(
        "metrics",
        [
            {"name": "request-success-rate", "thresholdRange": {"min": 99}},
            {"name": "request-duration", "thresholdRange": {"max": 500}},
        ],
    )
    return AnalysisSpec.model_validate(fields)


def analyzer(spec: AnalysisSpec, mesh: FakeMesh) -> Analyzer:
    return Analyzer(spec, mesh, "default", "reviews", CANARY, STABLE, clock=Clock())


def healthy() -> FakeMesh:
    return FakeMesh({CANARY: Workload(rps=5), STABLE: Workload(rps=45)})


def test_a_healthy_canary_continues_and_explains_itself():
    result = analyzer(analysis(), healthy()).check()
    assert result.decision is Decision.CONTINUE and result.verdict is Verdict.PASS
    rows = result.rows()
    assert [r["metric"] for r in rows] == ["request-success-rate", "request-duration", "(check)"]
    assert rows[0]["value"] == 100.0 and rows[1]["value"] == 50.0
    assert rows[-1]["decision"] == "continue"
    assert len({tuple(r) for r in rows}) == 1  # same columns: one table
    json.dumps(rows)  # a table artifact holds them as JSON


def test_threshold_failures_in_a_row_roll_back():
    mesh = healthy()
    mesh.workloads[CANARY].errors = 0.05
    a = analyzer(analysis(threshold=3, maxFailures=10), mesh)
    decisions = [a.check().decision for _ in range(3)]
    assert decisions == [Decision.HOLD, Decision.HOLD, Decision.ROLLBACK]
    assert a.check().decision is Decision.ROLLBACK  # latched


def test_a_passing_check_resets_the_run_but_not_the_total():
    mesh = healthy()
    a = analyzer(analysis(threshold=2, maxFailures=3), mesh)
    seen = []
    for bad in (True, False, True, False, True):
        mesh.workloads[CANARY].errors = 0.05 if bad else 0.0
        seen.append(a.check())
    assert [r.decision for r in seen] == [
        Decision.HOLD,
        Decision.CONTINUE,
        Decision.HOLD,
        Decision.CONTINUE,
        Decision.ROLLBACK,
    ]
    assert "3 failed checks in all" in seen[-1].reason


def test_max_failures_defaults_to_threshold_like_flaggers_cumulative_count():
    mesh = healthy()
    a = analyzer(analysis(threshold=2), mesh)
    results = []
    for bad in (True, False, True):
        mesh.workloads[CANARY].errors = 0.05 if bad else 0.0
        results.append(a.check().decision)
    assert results == [Decision.HOLD, Decision.CONTINUE, Decision.ROLLBACK]


@pytest.mark.parametrize(
    ("policy", "decision"),
    [("hold", Decision.HOLD), ("pause", Decision.PAUSE), ("fail", Decision.ROLLBACK)],
)
def test_too_little_traffic_is_no_data_and_the_plan_decides(policy, decision):
    mesh = healthy()
    mesh.workloads[CANARY].rps = 0.1  # 6 requests a minute, below minRequests 20
    result = analyzer(analysis(noData={"onNoData": policy}), mesh).check()
    assert result.verdict is Verdict.NO_DATA and result.decision is decision
    assert "fewer than 20" in result.reason


def test_an_empty_query_result_is_no_data_not_a_pass():
    mesh = healthy()
    mesh.custom["my_latency"] = None
    spec = analysis(
        metrics=[
            {
                "name": "my-latency",
                "thresholdRange": {"max": 1},
                "query": 'my_latency{ns="{{ namespace }}"}',
            }
        ]
    )
    result = analyzer(spec, mesh).check()
    assert result.verdict is Verdict.NO_DATA and result.decision is Decision.HOLD


@pytest.mark.parametrize(
    ("policy", "decision"), [("pause", Decision.PAUSE), ("rollback", Decision.ROLLBACK)]
)
def test_unreachable_prometheus_follows_the_plan(policy, decision):
    mesh = healthy()
    mesh.down = True
    result = analyzer(analysis(prometheus={"onUnreachable": policy}), mesh).check()
    assert result.verdict is None and result.decision is decision
    assert "onUnreachable" in result.reason and result.rows()[-1]["verdict"] == "unavailable"


def test_a_refused_query_pauses_for_a_human():
    mesh = healthy()
    mesh.refuse = True
    assert analyzer(analysis(), mesh).check().decision is Decision.PAUSE


def test_custom_metric_queries_are_rendered_with_checked_values():
    mesh = healthy()
    mesh.custom["my_queue"] = 3.0
    spec = analysis(
        metrics=[
            {
                "name": "queue-depth",
                "thresholdRange": {"max": 5},
                "interval": "30s",
                "query": 'max(max_over_time(my_queue{namespace="{{ namespace }}",'
                'pod=~"{{ canary }}-.*"}[{{interval}}]))',
            }
        ]
    )
    result = analyzer(spec, mesh).check()
    assert result.decision is Decision.CONTINUE
    rendered = 'max(max_over_time(my_queue{namespace="default",pod=~"reviews-v2-.*"}[30s]))'
    assert rendered in mesh.queries


@pytest.mark.parametrize("bad", ['reviews"} or vector(1) #', "Reviews", "a" * 64, ""])
def test_names_that_could_inject_promql_are_refused(bad):
    with pytest.raises(TemplateError):
        Analyzer(analysis(), healthy(), "default", "reviews", bad, STABLE)
    with pytest.raises(TemplateError):
        Analyzer(analysis(), healthy(), bad, "reviews", CANARY, STABLE)


def test_no_metrics_means_nothing_to_judge():
    result = analyzer(analysis(metrics=[]), healthy()).check()
    assert result.decision is Decision.CONTINUE and "no metric checks" in result.reason


# --- Mann-Whitney -----------------------------------------------------------------------


def mann_whitney(**judge) -> AnalysisSpec:
    return analysis(
        metrics=[{"name": "request-success-rate"}, {"name": "request-duration"}],
        judge={"kind": "mann-whitney", **judge},
    )


def test_mann_whitney_waits_for_enough_windows_then_passes():
    a = analyzer(mann_whitney(), healthy())
    early = [a.check() for _ in range(4)]
    assert all(r.verdict is Verdict.NO_DATA and r.decision is Decision.HOLD for r in early)
    fifth = a.check()
    assert fifth.decision is Decision.CONTINUE and fifth.score == 100.0


def test_mann_whitney_fails_a_canary_with_more_errors():
    mesh = healthy()
    mesh.workloads[CANARY].errors = 0.02
    a = analyzer(mann_whitney(), mesh)
    results = [a.check() for _ in range(5)]
    last = results[-1]
    assert last.verdict is Verdict.FAIL and last.decision is Decision.ROLLBACK
    assert last.metrics[0].classification == "Low" and last.score == 50.0


def test_mann_whitney_marginal_score_asks_a_human():
    mesh = healthy()
    mesh.workloads[CANARY].p99 = 80.0
    spec = analysis(
        metrics=[
            {"name": "request-success-rate", "weight": 4},
            {"name": "request-duration", "weight": 1},
        ],
        judge={"kind": "mann-whitney", "passScore": 90, "marginalScore": 70},
    )
    a = analyzer(spec, mesh)
    last = [a.check() for _ in range(5)][-1]
    assert last.score == 80.0 and last.verdict is Verdict.MARGINAL
    assert last.decision is Decision.PAUSE


def test_mann_whitney_critical_metric_fails_the_whole_check():
    mesh = healthy()
    mesh.workloads[CANARY].p99 = 80.0
    spec = analysis(
        metrics=[
            {"name": "request-success-rate", "weight": 99},
            {"name": "request-duration", "weight": 1, "critical": True},
        ],
        judge={"kind": "mann-whitney"},
    )
    a = analyzer(spec, mesh)
    last = [a.check() for _ in range(5)][-1]
    assert last.score == 0.0 and last.decision is Decision.ROLLBACK


# --- sequential -------------------------------------------------------------------------


def sequential(**fields) -> AnalysisSpec:
    return analysis(
        metrics=[{"name": "request-success-rate"}, {"name": "request-duration"}],
        judge={"kind": "sequential"},
        threshold=5,
        **fields,
    )


def test_sequential_rejection_rolls_back_at_once_whatever_the_threshold():
    mesh = healthy()
    mesh.workloads[CANARY].errors = 0.05
    mesh.workloads[STABLE].errors = 0.001
    result = analyzer(sequential(), mesh).check()
    assert result.decision is Decision.ROLLBACK and result.metrics[0].final
    assert "final" in result.reason


def test_sequential_keeps_counting_without_gaps_or_overlaps():
    mesh = healthy()
    mesh.workloads[CANARY].errors = mesh.workloads[STABLE].errors = 0.01
    a = analyzer(sequential(), mesh)
    for _ in range(3):
        assert a.check().decision is Decision.CONTINUE
    stat = a._tests["request-success-rate"].summary()
    assert stat["canary_requests"] == 3 * 60 * 5 and stat["stable_requests"] == 3 * 60 * 45


def test_sequential_latency_uses_the_stable_p99_bucket():
    mesh = healthy()
    mesh.workloads[CANARY].slow = 0.2
    mesh.workloads[STABLE].slow = 0.001
    result = analyzer(sequential(), mesh).check()
    assert result.decision is Decision.ROLLBACK
    assert result.metrics[1].verdict is Verdict.FAIL
    assert any('le="100"' in q for q in mesh.queries)  # the stable's p99 is in (50, 100]


def test_sequential_guard_range_fails_a_check_without_final_rollback():
    mesh = healthy()
    mesh.workloads[CANARY].p99 = 900.0
    spec = analysis(
        metrics=[{"name": "request-duration", "thresholdRange": {"max": 500}}],
        judge={"kind": "sequential"},
        threshold=2,
    )
    a = analyzer(spec, mesh)
    assert a.check().decision is Decision.HOLD
    assert a.check().decision is Decision.ROLLBACK
