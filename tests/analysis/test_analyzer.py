"""The analyzer's decisions: failed checks in a row and in all, no data, Prometheus down,
counts that pool, and what the end of a hold decides."""

from __future__ import annotations

import json

import pytest

from canary.analysis.analyzer import Analyzer, Decision
from canary.analysis.judges import Verdict
from canary.analysis.spec import TemplateError
from canary.plan import AnalysisSpec

from .fakes import FakeMesh, Workload, slowed

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


def analyzer(spec: AnalysisSpec, mesh: FakeMesh, clock: Clock | None = None) -> Analyzer:
    return Analyzer(spec, mesh, "default", "reviews", CANARY, STABLE, clock=clock or Clock())


def healthy() -> FakeMesh:
    return FakeMesh({CANARY: Workload(rps=5), STABLE: Workload(rps=45)})


def test_a_healthy_canary_continues_and_explains_itself():
    result = analyzer(analysis(), healthy()).check()
    assert result.decision is Decision.CONTINUE and result.verdict is Verdict.PASS
    rows = result.rows()
    assert [r["metric"] for r in rows] == ["request-success-rate", "request-duration", "(check)"]
    # The p99 of the fake's histogram: 99 % of requests lie below 50 + 50 * 0.09 / 0.095 ms.
    assert rows[0]["value"] == 100.0 and rows[1]["value"] == pytest.approx(50 + 50 * 0.09 / 0.095)
    assert rows[0]["requests"] == 5 * 60  # one minute's requests: the window's whole count
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
    mesh, clock = healthy(), Clock()
    a = analyzer(analysis(threshold=2, maxFailures=3), mesh, clock)
    seen = []
    for bad in (True, False, True, False, True):
        mesh.change(CANARY, clock.now, errors=0.05 if bad else 0.0)
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
    mesh, clock = healthy(), Clock()
    a = analyzer(analysis(threshold=2), mesh, clock)
    results = []
    for bad in (True, False, True):
        mesh.change(CANARY, clock.now, errors=0.05 if bad else 0.0)
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
    assert rendered in mesh.promql()


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
    mesh.workloads[CANARY].latency = slowed(0.02)
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
    mesh.workloads[CANARY].latency = slowed(0.02)
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
    assert result.metrics[0].reason.startswith("sequential test: canary 5xx rate above")
    assert "final" in result.reason


def test_sequential_counts_every_request_once():
    mesh = healthy()
    mesh.workloads[CANARY].errors = mesh.workloads[STABLE].errors = 0.01
    a = analyzer(sequential(), mesh)
    for _ in range(3):
        assert a.check().decision is Decision.CONTINUE
    stat = a._tests["request-success-rate"].summary()
    assert stat["canary_requests"] == 3 * 60 * 5 and stat["stable_requests"] == 3 * 60 * 45
    assert stat["canary_events"] == 3 * 60 * 5 * 0.01
    # Each counter is read once per time: windows share the reading where they meet.
    assert len(set(mesh.queries)) == len(mesh.queries)


def test_sequential_latency_uses_the_stable_p99_bucket():
    mesh = healthy()
    mesh.workloads[CANARY].latency = slowed(0.2)
    result = analyzer(sequential(), mesh).check()
    assert result.decision is Decision.ROLLBACK
    duration = result.metrics[1]
    # The stable's p99 is in (50, 100]: slow means slower than 100 ms.
    assert duration.verdict is Verdict.FAIL and "slower-than-100ms" in duration.reason


def test_sequential_guards_are_anytime_valid_tests_and_final():
    mesh = healthy()
    mesh.workloads[CANARY].latency = mesh.workloads[STABLE].latency = slowed(0.05)
    spec = analysis(
        metrics=[{"name": "request-duration", "thresholdRange": {"max": 250}}],
        judge={"kind": "sequential"},
        threshold=5,
    )
    a = analyzer(spec, mesh)
    result = a.check()
    # As slow as the stable, so the comparison cannot reject; the guard can, and at once.
    assert result.decision is Decision.ROLLBACK and result.metrics[0].final
    assert result.metrics[0].reason.startswith("sequential guard max 250: canary share")
    assert a._tests["request-duration"].rejected is False


def test_sequential_alpha_is_split_over_every_comparison_and_guard():
    a = analyzer(sequential_with_ranges(), healthy())
    alphas = [a._tests[m].alpha for m in a._tests]
    alphas += [test.alpha for guards in a._guards.values() for _, test in guards]
    assert len(alphas) == 4 and sum(alphas) == pytest.approx(0.01)


def sequential_with_ranges() -> AnalysisSpec:
    return analysis(judge={"kind": "sequential"})


# --- counts: what a window can show --------------------------------------------------------


def quiet_canary(errors: float = 0.0, rps: float = 1.0) -> FakeMesh:
    """60 canary requests a minute: one error reads 98.3 %."""
    return FakeMesh({CANARY: Workload(rps=rps, errors=errors), STABLE: Workload(rps=9)})


def floor_only(**fields) -> AnalysisSpec:
    return analysis(
        metrics=[{"name": "request-success-rate", "thresholdRange": {"min": 99}}], **fields
    )


def test_a_floor_fails_only_when_the_counts_show_it():
    # 2 errors in 60 requests read 96.7 %, under the floor, but a canary failing 1 % of its
    # requests shows that often enough: inconclusive, and nothing counted as failed.
    result = analyzer(floor_only(), quiet_canary(errors=2 / 60)).check()
    assert result.verdict is Verdict.INCONCLUSIVE and result.decision is Decision.HOLD
    assert result.failed_checks == 0
    reason = result.metrics[0].reason
    assert reason.startswith("96.67 outside [99, +inf] but not shown at 98 % confidence")
    assert "2 of 60 requests 5xx; at 60 requests it fails from 4 5xx" in reason
    failing = analyzer(floor_only(), quiet_canary(errors=4 / 60)).check()
    assert failing.verdict is Verdict.FAIL and failing.failed_checks == 1


def test_inconclusive_counts_pool_into_the_next_checks():
    mesh, clock = quiet_canary(errors=2 / 60), Clock()
    a = analyzer(floor_only(), mesh, clock)
    assert a.check().verdict is Verdict.INCONCLUSIVE  # 2 of 60
    mesh.change(CANARY, clock.now, errors=0.0)
    second = a.check()  # 2 of 120: 98.3 %, still pooling
    assert second.verdict is Verdict.INCONCLUSIVE
    assert second.metrics[0].requests == 120 and "pooled over 2 checks" in second.metrics[0].reason
    third = a.check()  # 2 of 180: 98.9 %
    assert third.verdict is Verdict.INCONCLUSIVE and third.metrics[0].requests == 180
    fourth = a.check()  # 2 of 240: 99.2 %, within: pass, and the pool starts again
    assert fourth.verdict is Verdict.PASS and fourth.decision is Decision.CONTINUE
    assert a.check().metrics[0].requests == 60


def test_pooled_counts_fail_what_no_single_window_shows():
    mesh, clock = quiet_canary(errors=2 / 60), Clock()
    a = analyzer(floor_only(), mesh, clock)
    assert [a.check().verdict for _ in range(2)] == [Verdict.INCONCLUSIVE] * 2
    third = a.check()  # 6 of 180 (3.3 %): shown
    assert third.verdict is Verdict.FAIL and "6 of 180 requests 5xx" in third.metrics[0].reason


def test_a_ceiling_on_the_p99_is_a_limit_on_slow_requests():
    mesh = healthy()
    mesh.workloads[CANARY].latency = slowed(0.05)  # 15 of 300 slower than 250 ms
    spec = analysis(metrics=[{"name": "request-duration", "thresholdRange": {"max": 250}}])
    result = analyzer(spec, mesh).check()
    assert result.verdict is Verdict.FAIL
    assert "15 of 300 requests slower than 250 ms" in result.metrics[0].reason


def test_a_reset_counter_falls_back_to_increase_for_that_window():
    mesh, clock = healthy(), Clock()
    a = analyzer(floor_only(), mesh, clock)
    a.check()
    mesh.workloads[CANARY].reset_at = clock.now + 30  # the canary's pod restarts mid-window
    result = a.check()
    assert result.decision is Decision.CONTINUE and result.metrics[0].requests == 5 * 60
    assert any("increase(istio_requests_total" in q for q in mesh.promql())


# --- the end of a hold ---------------------------------------------------------------------


def test_at_the_end_of_the_hold_too_little_traffic_asks_a_person_once_per_step():
    a = analyzer(floor_only(), quiet_canary(rps=0.05))  # 3 canary requests a minute
    during = [a.check(step="step-1") for _ in range(3)]
    assert all(r.decision is Decision.HOLD and r.verdict is Verdict.NO_DATA for r in during)
    end = a.check(step="step-1", hold_ending=True)
    assert end.decision is Decision.PAUSE
    assert end.reason.startswith("the traffic cannot support a decision: request-success-rate")
    assert "12 canary requests, fewer than 20" in end.reason  # the hold's, pooled
    # Asked once: a person let the hold go on, so the next end of this hold passes.
    after = a.check(step="step-1", hold_ending=True)
    assert after.decision is Decision.CONTINUE and "a person let the hold go on" in after.reason
    assert a.check(step="step-2", hold_ending=True).decision is Decision.PAUSE


def test_at_the_end_of_the_hold_a_pooling_metric_is_judged_on_the_whole_hold():
    mesh, clock = quiet_canary(errors=2 / 60), Clock()
    a = analyzer(floor_only(), mesh, clock)
    mesh.change(CANARY, clock.now + 60, errors=0.0)
    checks = [a.check(step="step-1") for _ in range(2)]  # 2 of 60, then 2 of 120
    assert [r.verdict for r in checks] == [Verdict.INCONCLUSIVE] * 2
    end = a.check(step="step-1", hold_ending=True)  # 2 of 180: still under 99 % ...
    assert end.decision is Decision.PAUSE and "2 of 180 requests 5xx" in end.reason
    mesh2, clock2 = quiet_canary(errors=2 / 60), Clock()
    b = analyzer(floor_only(), mesh2, clock2)
    mesh2.change(CANARY, clock2.now + 60, errors=0.0)
    for _ in range(3):
        b.check(step="step-1")
    passed = b.check(step="step-1", hold_ending=True)  # ... 2 of 240 is within it
    assert passed.decision is Decision.CONTINUE


def test_sequential_at_the_end_of_the_hold_asks_when_it_could_not_have_seen_one_point():
    quiet = FakeMesh({CANARY: Workload(rps=0.1), STABLE: Workload(rps=0.9, errors=0.01)})
    a = analyzer(sequential(), quiet)
    for _ in range(4):
        assert a.check(step="step-1").decision is Decision.HOLD  # 6 requests: no data
    end = a.check(step="step-1", hold_ending=True)
    assert end.decision is Decision.PAUSE
    assert "request-success-rate 30 canary requests; a canary 1 points worse needs about" in (
        end.reason
    )
    busy = analyzer(sequential(), healthy())
    for _ in range(4):
        busy.check(step="step-1")
    assert busy.check(step="step-1", hold_ending=True).decision is Decision.CONTINUE


def test_without_the_hold_s_end_the_analyzer_never_asks_about_traffic():
    a = analyzer(floor_only(), quiet_canary(rps=0.05))
    assert {a.check().decision for _ in range(5)} == {Decision.HOLD}
