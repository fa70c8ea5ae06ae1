"""Runs the plan's metric checks once per interval and decides what the release does next.

Construct one ``Analyzer`` per release, call ``check()`` every interval. Each call reads the
metrics, lets the judge give a verdict, counts failed checks and returns an
``AnalysisResult`` whose ``decision`` is one of:

* continue: the check passed; the release may go on when its hold ends;
* hold: stay at the current weight and check again next interval (a failed check below the
  limits, or too little traffic with ``noData.onNoData: hold``);
* pause: ask a human (a Marginal score, ``onNoData: pause``, an unreachable Prometheus with
  ``onUnreachable: pause``, or a query Prometheus refuses);
* rollback: ``threshold`` failed checks in a row, ``maxFailures`` in all, a sequential
  rejection (final at once), or an unreachable Prometheus with ``onUnreachable: rollback``.

Once it has said rollback it keeps saying so.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from canary.analysis.counts import ShareLimit, WorkloadCounts
from canary.analysis.istio_metrics import TEMPLATES
from canary.analysis.judges import (
    Counts,
    GuardReading,
    JudgeOutcome,
    LimitReading,
    MetricVerdict,
    Verdict,
    count_check,
    judge_all,
    judge_score,
    mann_whitney_check,
    sequential_check,
    threshold_check,
)
from canary.analysis.prometheus import MetricsProvider, MetricsQueryError, MetricsUnavailable
from canary.analysis.readings import ROLES, Readings
from canary.analysis.sequential import (
    RateRatioTest,
    ShareBoundTest,
    histogram_quantile,
    slow_bound,
)
from canary.analysis.spec import (
    DURATION,
    MetricCheck,
    compared,
    render,
    safe_values,
    safe_window,
    window_of,
)

if TYPE_CHECKING:
    from canary.plan import AnalysisSpec, ReleasePlan

# The stable's latency profile, for the sequential judge's "slow" bound, is read over this
# window just before the analysis starts.
BASELINE_WINDOW_S = 600.0
QUANTILE = 0.99  # request-duration is the p99


class Decision(StrEnum):
    CONTINUE = "continue"
    HOLD = "hold"
    PAUSE = "pause"
    ROLLBACK = "rollback"


@dataclass(frozen=True)
class AnalysisResult:
    """One check: what was measured, what the judge said, and what to do."""

    check: int
    at: float
    judge: str
    verdict: Verdict | None  # None when the metrics could not be read
    decision: Decision
    reason: str
    metrics: tuple[MetricVerdict, ...] = ()
    score: float | None = None
    failed_checks: int = 0
    consecutive_failures: int = 0

    def rows(self) -> list[dict[str, Any]]:
        """One row per metric and a summary row, for logs and a table artifact."""
        rows = [
            {
                "check": self.check,
                "metric": v.metric,
                "value": v.value,
                "stable": v.stable,
                "requests": v.requests,
                "verdict": str(v.verdict),
                "statistic": _statistic_text(v),
                "reason": v.reason,
                "decision": "",
            }
            for v in self.metrics
        ]
        rows.append(
            {
                "check": self.check,
                "metric": "(check)",
                "value": self.score,
                "stable": None,
                "requests": None,
                "verdict": "unavailable" if self.verdict is None else str(self.verdict),
                "statistic": (f"failed {self.failed_checks}, in a row {self.consecutive_failures}"),
                "reason": self.reason,
                "decision": str(self.decision),
            }
        )
        return rows


@dataclass
class _Read:
    """What one metric's check read; judging happens only once every read succeeded."""

    start: float = 0.0  # the judged window's start (threshold: back to its pool)
    value: float | None = None
    requests: float | None = None
    canary: WorkloadCounts | None = None
    stable: WorkloadCounts | None = None
    samples: tuple[list[float], list[float]] = ((), ())  # type: ignore[assignment]
    slow_le: float | None = None


class Analyzer:
    """The plan's analysis for one release, one ``check()`` per interval."""

    def __init__(
        self,
        spec: AnalysisSpec,
        provider: MetricsProvider,
        namespace: str,
        service: str,
        canary_workload: str,
        stable_workload: str,
        clock: Callable[[], float] = time.time,
    ):
        self.spec = spec
        self.provider = provider
        self._names = safe_values(namespace, service, canary_workload, stable_workload)
        self._clock = clock
        self._checks = 0
        self._failed = 0
        self._consecutive = 0
        self._first: float | None = None
        self._times: list[float] = []  # every check whose metrics were read
        self._rolled_back: AnalysisResult | None = None
        self._step: str | None = None
        self._asked = False  # a person was asked at the end of this step's hold
        self._step_judged = False  # its metrics were judged over the whole hold
        self._step_start: float | None = None  # the last check before the step began
        self._readings = Readings(
            provider, self._names, any(m.name == DURATION for m in spec.metrics)
        )
        self._pools: dict[str, float] = {}  # metric -> start of its undecided counts
        self._tests, self._guards = self._sequential_tests()
        self._slow_le: float | None = None
        self._cache: dict[tuple[str, float | None], float | None] = {}
        # Mann-Whitney: each window's value, by (metric, role, start, end).
        self._sample_of: dict[tuple[str, str, float, float], float | None] = {}

    @classmethod
    def for_plan(
        cls,
        plan: ReleasePlan,
        provider: MetricsProvider | None = None,
        clock: Callable[[], float] = time.time,
    ) -> Analyzer:
        """The analyzer of a plan; Istio labels workloads with their Deployment's name."""
        if provider is None:
            from canary.analysis.prometheus import PrometheusProvider

            provider = PrometheusProvider.from_spec(plan.analysis.prometheus)
        return cls(
            plan.analysis,
            provider,
            plan.namespace,
            plan.service,
            plan.canary_deployment,
            plan.stable_deployment,
            clock,
        )

    def _sequential_tests(
        self,
    ) -> tuple[dict[str, RateRatioTest], dict[str, list[tuple[str, ShareBoundTest]]]]:
        """One comparison per built-in metric and one guard per bound of its thresholdRange,
        alpha split evenly over all of them (Bonferroni): the bound holds for the release."""
        judged = [m for m in self.spec.metrics if self._method(m) == "sequential"]
        bounds = {m.name: _bounds(m) for m in judged}
        count = len(judged) + sum(len(b) for b in bounds.values())
        alpha, scale = self.spec.judge.alpha / max(1, count), self.spec.judge.prior_scale
        tests = {m.name: RateRatioTest(alpha, scale) for m in judged}
        guards = {
            m.name: [
                (label, ShareBoundTest(alpha, limit.limit, limit.at_most, scale))
                for label, limit in bounds[m.name]
            ]
            for m in judged
        }
        return tests, guards

    # --- the check -----------------------------------------------------------------------

    def check(self, step: str | None = None, hold_ending: bool = False) -> AnalysisResult:
        """One round. ``step``: the phase being held; ``hold_ending``: its hold is over
        unless this round keeps it going, so an undecided analysis asks a person now."""
        now = self._clock()
        self._checks += 1
        if step != self._step:
            self._step, self._asked, self._step_judged = step, False, False
            self._step_start = self._times[-1] if self._times else None
        if self._rolled_back is not None:
            return self._result(
                now, None, Decision.ROLLBACK, f"already decided: {self._rolled_back.reason}"
            )
        if self._first is None:
            self._first = now
        if not self.spec.metrics:
            return self._result(now, None, Decision.CONTINUE, "the plan has no metric checks")
        self._cache = {}
        try:
            outcome = self._judge(now)
            result = self._decide(now, outcome)
            if hold_ending:
                result = self._at_hold_end(now, outcome, result)
        except MetricsQueryError as exc:
            return self._result(now, None, Decision.PAUSE, f"{exc}; fix the query")
        except MetricsUnavailable as exc:
            decision = Decision(self.spec.prometheus.on_unreachable)
            return self._latch(
                self._result(now, None, decision, f"{exc} (prometheus.onUnreachable: {decision})")
            )
        return self._latch(result)

    def _judge(self, now: float) -> JudgeOutcome:
        reads = [self._read(m, now) for m in self.spec.metrics]
        verdicts = [self._verdict(m, r, now) for m, r in zip(self.spec.metrics, reads, strict=True)]
        self._times.append(now)
        self._forget(now)
        judge = self.spec.judge
        if judge.kind == "mann-whitney":
            return judge_score(verdicts, judge.pass_score, judge.marginal_score)
        return judge_all(verdicts)

    def _decide(self, now: float, outcome: JudgeOutcome) -> AnalysisResult:
        verdict, reason = outcome.verdict, outcome.reason
        if verdict is Verdict.NO_DATA:
            policy = self.spec.no_data.on_no_data
            if policy != "fail":
                return self._result(
                    now, outcome, Decision(policy), f"{reason} (noData.onNoData: {policy})"
                )
            reason = f"{reason} (noData.onNoData: fail counts it as a failed check)"
        if verdict is Verdict.INCONCLUSIVE:
            return self._result(now, outcome, Decision.HOLD, f"{reason}; holding")
        if verdict is Verdict.MARGINAL:
            return self._result(now, outcome, Decision.PAUSE, f"marginal: {reason}")
        if verdict is Verdict.PASS:
            self._consecutive = 0
            return self._result(now, outcome, Decision.CONTINUE, reason)
        return self._failed_check(now, outcome, reason)

    def _failed_check(self, now: float, outcome: JudgeOutcome, reason: str) -> AnalysisResult:
        self._failed += 1
        self._consecutive += 1
        threshold, limit = self.spec.threshold, self.spec.failure_limit
        if outcome.final:
            why = "the sequential test's rejection is final"
        elif self._consecutive >= threshold:
            why = f"{self._consecutive} failed checks in a row (threshold {threshold})"
        elif self._failed >= limit:
            why = f"{self._failed} failed checks in all (maxFailures {limit})"
        else:
            why = (
                f"failed check {self._failed} of {limit} allowed, "
                f"{self._consecutive} in a row of {threshold}; holding"
            )
            return self._result(now, outcome, Decision.HOLD, f"{reason}; {why}")
        return self._result(now, outcome, Decision.ROLLBACK, f"{reason}; {why}")

    def _at_hold_end(
        self, now: float, outcome: JudgeOutcome, result: AnalysisResult
    ) -> AnalysisResult:
        """At the end of a hold an undecided analysis is decided over the hold, or asks.

        A threshold metric still pooling is judged once on the whole step's counts: within
        its range it passes, a breach the counts show is a failed check. What stays
        undecided (too few requests, inconclusive counts, a Mann-Whitney side without
        enough windows, a sequential test whose traffic so far could not have caught a
        canary ``judge.detectablePoints`` worse than the stable) asks a person, once per
        step. After the person let the hold go on, an undecided round at its (moved) end
        passes: they decided.
        """
        if result.decision not in (Decision.CONTINUE, Decision.HOLD):
            return result
        if outcome.verdict not in (Verdict.PASS, Verdict.NO_DATA, Verdict.INCONCLUSIVE):
            return result
        if outcome.verdict is Verdict.NO_DATA and self.spec.no_data.on_no_data == "fail":
            return result  # a failed check, counted as the plan says
        metrics, short = self._hold_verdicts(outcome, now)
        over_hold = judge_all(metrics)
        if over_hold.verdict is Verdict.FAIL:
            return self._failed_check(now, over_hold, f"over the hold: {over_hold.reason}")
        if not short:
            if result.decision is Decision.CONTINUE:
                return result
            self._consecutive = 0
            passed = JudgeOutcome(Verdict.PASS, metrics, "every metric passed over the hold")
            return self._result(now, passed, Decision.CONTINUE, passed.reason)
        why = "; ".join(short)
        if self._asked:
            reason = f"undecided, and a person let the hold go on: {why}"
            return self._result(now, outcome, Decision.CONTINUE, reason)
        self._asked = True
        return self._result(
            now, outcome, Decision.PAUSE, f"the traffic cannot support a decision: {why}"
        )

    def _hold_verdicts(
        self, outcome: JudgeOutcome, now: float
    ) -> tuple[tuple[MetricVerdict, ...], list[str]]:
        """Each metric's verdict over the hold, and why the undecided ones are."""
        points = self.spec.judge.detectable_points
        first_time = not self._step_judged
        verdicts, short = [], []
        for verdict in outcome.metrics:
            metric = next(m for m in self.spec.metrics if m.name == verdict.metric)
            test = self._tests.get(metric.name)
            if test is not None and test.canary_total:
                needed = test.requests_to_see(points)
                if needed is not None:
                    short.append(
                        f"{metric.name} {test.canary_total} canary requests; a canary "
                        f"{points:g} points worse needs about {_needed(needed)}"
                    )
            elif verdict.verdict in (Verdict.NO_DATA, Verdict.INCONCLUSIVE):
                if first_time and metric.builtin and self._method(metric) == "threshold":
                    verdict = self._over_hold(metric, now)
                if verdict.verdict in (Verdict.NO_DATA, Verdict.INCONCLUSIVE):
                    short.append(f"{metric.name} {verdict.reason}")
                else:
                    self._pools.pop(metric.name, None)
            verdicts.append(verdict)
        self._step_judged = True
        return tuple(verdicts), short

    def _over_hold(self, metric: MetricCheck, now: float) -> MetricVerdict:
        """A threshold metric on the counts of the whole step so far."""
        assert self._first is not None
        start = self._step_start
        if start is None:
            start = self._first - self._window(metric)
        canary = self._readings.between("canary", start, now)
        got = _Read(start=start, value=_value(metric, canary), requests=canary.requests)
        got.canary = canary
        return self._count_verdict(metric, got, now)

    def _result(
        self, now: float, outcome: JudgeOutcome | None, decision: Decision, reason: str
    ) -> AnalysisResult:
        return AnalysisResult(
            check=self._checks,
            at=now,
            judge=self.spec.judge.kind,
            verdict=None if outcome is None else outcome.verdict,
            decision=decision,
            reason=reason,
            metrics=() if outcome is None else outcome.metrics,
            score=None if outcome is None else outcome.score,
            failed_checks=self._failed,
            consecutive_failures=self._consecutive,
        )

    def _latch(self, result: AnalysisResult) -> AnalysisResult:
        if result.decision is Decision.ROLLBACK:
            self._rolled_back = result
        return result

    # --- reading -------------------------------------------------------------------------

    def _method(self, metric: MetricCheck) -> str:
        kind = self.spec.judge.kind
        return kind if compared(metric, kind) else "threshold"

    def _window(self, metric: MetricCheck) -> float:
        return window_of(metric, self.spec.interval)

    def _span_start(self, metric: MetricCheck, now: float) -> float:
        """Where this check's window for ``metric`` starts: at a reading time next to
        ``now - window``, never after the previous check (windows meet or overlap)."""
        window = self._window(metric)
        if not self._times:
            return now - window
        near = self._readings.nearest(now - window, before=now)
        return min(self._times[-1], now - window if near is None else near)

    def _read(self, metric: MetricCheck, now: float) -> _Read:
        method = self._method(metric)
        if not metric.builtin:
            return self._read_custom(metric, method, now)
        if method == "sequential":
            return self._read_sequential(metric, now)
        start = self._span_start(metric, now)
        if method == "threshold":
            start = min(start, self._pools.get(metric.name, start))
        canary = self._readings.between("canary", start, now)
        got = _Read(start=start, value=_value(metric, canary), requests=canary.requests)
        got.canary = canary
        if method == "mann-whitney":
            got.samples = self._samples(metric, now)
        return got

    def _read_custom(self, metric: MetricCheck, method: str, now: float) -> _Read:
        start = self._span_start(metric, now)
        got = _Read(start=start)
        got.value = self._query(metric.query or "", self._window(metric), now)
        got.requests = self._readings.between("canary", start, now).requests
        if method == "mann-whitney":
            got.samples = self._windows(metric, self._window(metric), now)
        return got

    def _read_sequential(self, metric: MetricCheck, now: float) -> _Read:
        start = self._times[-1] if self._times else now - self._window(metric)
        canary = self._readings.between("canary", start, now)
        stable = self._readings.between("stable", start, now)
        got = _Read(start=start, value=_value(metric, canary), requests=canary.requests)
        got.canary, got.stable = canary, stable
        if metric.name == DURATION:
            got.slow_le = self._slow_bound(start)
        return got

    def _verdict(self, metric: MetricCheck, got: _Read, now: float) -> MetricVerdict:
        judge, min_requests = self.spec.judge, self.spec.no_data.min_requests
        method = self._method(metric)
        common = {"critical": metric.critical, "weight": metric.weight}
        if not metric.builtin and method != "mann-whitney":
            assert metric.threshold_range is not None  # the plan's validation ensures it
            return threshold_check(
                metric.name, got.value, metric.threshold_range, got.requests, min_requests, **common
            )
        if method == "sequential":
            return self._sequential_verdict(metric, got, min_requests, common)
        if method == "threshold":
            verdict = self._count_verdict(metric, got, now)
            if verdict.verdict in (Verdict.NO_DATA, Verdict.INCONCLUSIVE):
                self._pools.setdefault(metric.name, got.start)
            else:
                self._pools.pop(metric.name, None)
            return verdict
        canary, stable = got.samples
        guard = None
        if metric.threshold_range is not None:
            guard = (
                self._count_verdict(metric, got, now)
                if metric.builtin
                else threshold_check(metric.name, got.value, metric.threshold_range)
            )
        return mann_whitney_check(
            metric.name,
            canary,
            stable,
            metric.bad_direction,
            confidence=judge.confidence,
            tolerance=judge.effect_size_tolerance,
            min_samples=judge.min_samples,
            value=got.value,
            requests=got.requests,
            guard=guard,
            **common,
        )

    def _count_verdict(self, metric: MetricCheck, got: _Read, now: float) -> MetricVerdict:
        assert metric.threshold_range is not None and got.canary is not None
        return count_check(
            metric.name,
            got.value,
            metric.threshold_range,
            _limit_readings(metric, got.canary),
            got.canary.requests,
            self.spec.no_data.min_requests,
            self.spec.judge.confidence,
            pooled=1 + sum(got.start < t < now for t in self._times),
            critical=metric.critical,
            weight=metric.weight,
        )

    def _sequential_verdict(
        self, metric: MetricCheck, got: _Read, min_requests: int, common: dict[str, Any]
    ) -> MetricVerdict:
        canary, stable = got.canary, got.stable
        assert canary is not None and stable is not None
        slow = metric.name == DURATION
        if slow and got.slow_le is None:
            return MetricVerdict(
                metric.name,
                Verdict.NO_DATA,
                reason="no latency bound yet: the stable has no histogram",
                **common,
            )
        if slow:
            assert got.slow_le is not None
            counts = Counts(
                canary_events=canary.slower_than(got.slow_le),
                canary_total=canary.observed,
                stable_events=stable.slower_than(got.slow_le),
                stable_total=stable.observed,
            )
            event = f"slower-than-{got.slow_le:g}ms"
        else:
            counts = Counts(canary.errors, canary.requests, stable.errors, stable.requests)
            event = "5xx"
        readings = {r.bound: r for r in _limit_readings(metric, canary, whole=True)}
        guards = [
            GuardReading(
                test, label, readings[label].events, readings[label].total, readings[label].event
            )
            for label, test in self._guards[metric.name]
        ]
        return sequential_check(
            metric.name,
            self._tests[metric.name],
            counts,
            min_requests,
            event=event,
            guards=guards,
            value=got.value,
            stable=_value(metric, stable),
            **common,
        )

    def _values(self, window: float, **extra: str) -> dict[str, str]:
        return {**self._names, "interval": safe_window(window), **extra}

    def _query(
        self, template: str, window: float, at: float, count: bool = False, **extra: str
    ) -> float | None:
        promql = render(template, self._values(window, **extra))
        key = (promql, at)
        if key not in self._cache:
            self._cache[key] = self.provider.query(promql, at)
        value = self._cache[key]
        # An empty count is zero requests: no series has moved in the window.
        return 0.0 if count and value is None else value

    def _samples(self, metric: MetricCheck, now: float) -> tuple[list[float], list[float]]:
        """Canary and stable values of the built-in metric over consecutive windows.

        The windows run between reading times, each about the metric's window long, back
        to the analysis' first window (or ``lookback``); a window with fewer than
        ``minRequests`` requests on a side is left out of that side.
        """
        window, min_requests = self._window(metric), self.spec.no_data.min_requests
        lookback = self.spec.judge.lookback
        ends = [now]
        if not self._times:
            ends.append(now - window)
        while (earlier := self._readings.nearest(ends[-1] - window, before=ends[-1])) is not None:
            if lookback is not None and earlier < now - lookback - 1e-9:
                break
            ends.append(earlier)
        sides: tuple[list[float], list[float]] = ([], [])
        for end, start in itertools.pairwise(ends):
            for role, values in zip(ROLES, sides, strict=True):
                key = (metric.name, role, start, end)
                if key not in self._sample_of:  # a window's value never changes: once
                    counts = self._readings.between(role, start, end)
                    enough = counts.requests >= min_requests
                    self._sample_of[key] = _value(metric, counts) if enough else None
                if (value := self._sample_of[key]) is not None:
                    values.append(value)
        return sides[0][::-1], sides[1][::-1]

    def _windows(
        self, metric: MetricCheck, window: float, now: float
    ) -> tuple[list[float], list[float]]:
        """Custom metrics: canary and stable values over consecutive windows since the
        analysis began, with ``increase()`` requests per window for the no-data rule."""
        assert self._first is not None
        count = math.floor((now - self._first) / window + 1e-9) + 1
        lookback = self.spec.judge.lookback
        if lookback is not None:
            count = max(1, min(count, math.floor(lookback / window)))
        start = now - (count - 1) * window
        canary = self._series(metric.query or "", window, start, now)
        stable = self._series(metric.stable_query or "", window, start, now)
        min_requests = self.spec.no_data.min_requests
        busy_c = self._busy(TEMPLATES["canary-requests"], window, start, now, min_requests)
        busy_s = self._busy(TEMPLATES["stable-requests"], window, start, now, min_requests)
        return (
            [v for t, v in canary.items() if t in busy_c],
            [v for t, v in stable.items() if t in busy_s],
        )

    def _series(self, template: str, window: float, start: float, end: float) -> dict[int, float]:
        promql = render(template, self._values(window))
        points = self.provider.query_range(promql, start, end, window)
        return {round(t * 1000): v for t, v in points}

    def _busy(
        self, template: str, window: float, start: float, end: float, min_requests: int
    ) -> set[int]:
        """The windows with at least ``min_requests`` requests."""
        return {
            t for t, v in self._series(template, window, start, end).items() if v >= min_requests
        }

    def _slow_bound(self, before: float) -> float | None:
        """The bucket bound that makes a request slow, fixed once found.

        It is the smallest bucket bound at or above judge.latencyThresholdMs, else above the
        stable's p99 over the window before ``before``; chosen before the canary's data
        is seen, so the test's null hypothesis does not depend on it.
        """
        if self._slow_le is not None:
            return self._slow_le
        stable = self._readings.between("stable", before - BASELINE_WINDOW_S, before)
        buckets = list(stable.buckets)
        target = self.spec.judge.latency_threshold_ms or histogram_quantile(0.99, buckets)
        self._slow_le = None if target is None else slow_bound(buckets, target)
        return self._slow_le

    def _forget(self, now: float) -> None:
        """Readings no later window can start at: before every pool and every window."""
        if self.spec.judge.kind == "mann-whitney" and self.spec.judge.lookback is None:
            return
        reach = max(self._window(m) for m in self.spec.metrics) + self.spec.interval
        reach += self.spec.judge.lookback or 0.0
        # The step's counts are judged from its start at its end (the first step: from the
        # analysis' first windows).
        step_start = self._step_start
        if step_start is None and self._first is not None:
            step_start = self._first - reach
        starts = [*self._pools.values(), *([] if step_start is None else [step_start])]
        cutoff = min([now - reach, *starts])
        self._readings.forget_before(cutoff)
        self._sample_of = {k: v for k, v in self._sample_of.items() if k[2] >= cutoff}
        self._times = [t for t in self._times if t >= cutoff] or self._times[-1:]


def _bounds(metric: MetricCheck) -> list[tuple[str, ShareLimit]]:
    """The thresholdRange's bounds as limits on a share of requests: 5xx for the success
    rate (a floor of 99 %: at most 1 %), slower than the bound for the p99 (a ceiling of
    250 ms: at most 1 % slower than 250 ms)."""
    bounds = metric.threshold_range
    if bounds is None:
        return []
    out = []
    for side, bound in (("min", bounds.min), ("max", bounds.max)):
        if bound is None:
            continue
        if metric.name == DURATION:
            limit = ShareLimit(1.0 - QUANTILE, at_most=side == "max")
        else:
            limit = ShareLimit(min(1.0, max(0.0, 1.0 - bound / 100.0)), at_most=side == "min")
        out.append((f"{side} {bound:g}", limit))
    return out


def _limit_readings(
    metric: MetricCheck, counts: WorkloadCounts, whole: bool = False
) -> list[LimitReading]:
    """The window's events for each bound. A latency bound between two bucket bounds is
    read as histogram_quantile reads it (requests spread evenly inside a bucket), or with
    ``whole``, at the neighbouring bucket bound that can only understate a breach."""
    out = []
    for label, limit in _bounds(metric):
        if metric.name != DURATION:
            out.append(LimitReading(label, limit, counts.errors, counts.requests, "5xx"))
            continue
        bound = float(label.split()[1])
        if whole:
            bound, events = counts.slower_than_bucket(bound, limit.at_most)
        else:
            events = counts.slower_than(bound)
        out.append(LimitReading(label, limit, events, counts.observed, f"slower than {bound:g} ms"))
    return out


def _value(metric: MetricCheck, counts: WorkloadCounts) -> float | None:
    """The shown value of a built-in metric over a window: success rate %, or p99 in ms."""
    if metric.name == DURATION:
        return counts.quantile(QUANTILE) if counts.observed > 0 else None
    return counts.success_rate


def _needed(requests: float) -> str:
    return "more than it can get" if math.isinf(requests) else f"{requests:.0f}"


def _statistic_text(verdict: MetricVerdict) -> str:
    parts = [f"{k}={v}" for k, v in verdict.statistic.items() if v is not None]
    if verdict.classification is not None:
        parts.insert(0, str(verdict.classification))
    return ", ".join(parts)
