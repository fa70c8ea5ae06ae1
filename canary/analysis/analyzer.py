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

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from canary.analysis.istio_metrics import TEMPLATES
from canary.analysis.judges import (
    Counts,
    JudgeOutcome,
    MetricVerdict,
    Verdict,
    judge_all,
    judge_score,
    mann_whitney_check,
    sequential_check,
    threshold_check,
)
from canary.analysis.prometheus import MetricsProvider, MetricsQueryError, MetricsUnavailable
from canary.analysis.sequential import RateRatioTest, histogram_quantile, slow_bound
from canary.analysis.spec import (
    DURATION,
    MetricCheck,
    compared,
    render,
    safe_bucket_bound,
    safe_values,
    safe_window,
    window_of,
)

if TYPE_CHECKING:
    from canary.plan import AnalysisSpec, ReleasePlan

# The stable's latency profile, for the sequential judge's "slow" bound, is read over this
# window just before the analysis starts.
BASELINE_WINDOW_S = 600.0


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
class _Fetched:
    """What one metric's check read; judging happens only once every read succeeded."""

    value: float | None = None
    requests: float | None = None
    canary: list[float] = field(default_factory=list)
    stable: list[float] = field(default_factory=list)
    counts: Counts | None = None


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
        self._last_counted: float | None = None
        self._rolled_back: AnalysisResult | None = None
        alpha = spec.judge.alpha / max(1, len(self._sequential_metrics()))
        self._tests = {
            m.name: RateRatioTest(alpha, spec.judge.prior_scale) for m in self._sequential_metrics()
        }
        self._slow_le: str | None = None
        self._cache: dict[tuple[str, float | None], float | None] = {}

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

    # --- the check -----------------------------------------------------------------------

    def check(self) -> AnalysisResult:
        now = self._clock()
        self._checks += 1
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
        except MetricsQueryError as exc:
            return self._result(now, None, Decision.PAUSE, f"{exc}; fix the query")
        except MetricsUnavailable as exc:
            decision = Decision(self.spec.prometheus.on_unreachable)
            return self._latch(
                self._result(now, None, decision, f"{exc} (prometheus.onUnreachable: {decision})")
            )
        return self._latch(self._decide(now, outcome))

    def _judge(self, now: float) -> JudgeOutcome:
        fetched = [self._fetch(m, now) for m in self.spec.metrics]
        verdicts = [self._verdict(m, f) for m, f in zip(self.spec.metrics, fetched, strict=True)]
        self._last_counted = now
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

    def _sequential_metrics(self) -> list[MetricCheck]:
        return [m for m in self.spec.metrics if self._method(m) == "sequential"]

    def _fetch(self, metric: MetricCheck, now: float) -> _Fetched:
        window = window_of(metric, self.spec.interval)
        method = self._method(metric)
        got = _Fetched()
        if method != "sequential" or metric.threshold_range is not None:
            got.value = self._query(self._canary_template(metric), window, now)
            got.requests = self._query(TEMPLATES["canary-requests"], window, now, count=True)
        if method == "mann-whitney":
            got.canary, got.stable = self._windows(metric, window, now)
        elif method == "sequential":
            got.counts = self._counts(metric, window, now)
        return got

    def _verdict(self, metric: MetricCheck, got: _Fetched) -> MetricVerdict:
        judge, min_requests = self.spec.judge, self.spec.no_data.min_requests
        method = self._method(metric)
        common = {"critical": metric.critical, "weight": metric.weight}
        if method == "threshold":
            assert metric.threshold_range is not None  # the plan's validation ensures it
            return threshold_check(
                metric.name, got.value, metric.threshold_range, got.requests, min_requests, **common
            )
        if method == "mann-whitney":
            return mann_whitney_check(
                metric.name,
                got.canary,
                got.stable,
                metric.bad_direction,
                confidence=judge.confidence,
                tolerance=judge.effect_size_tolerance,
                min_samples=judge.min_samples,
                value=got.value,
                requests=got.requests,
                guard=metric.threshold_range,
                **common,
            )
        return self._sequential_verdict(metric, got, min_requests, common)

    def _sequential_verdict(
        self, metric: MetricCheck, got: _Fetched, min_requests: int, common: dict[str, Any]
    ) -> MetricVerdict:
        slow = metric.name == DURATION
        if got.counts is None:
            return MetricVerdict(
                metric.name,
                Verdict.NO_DATA,
                reason="no latency bound yet: the stable has no histogram",
                **common,
            )
        event = f"slower-than-{self._slow_le}ms" if slow else "5xx"
        verdict = sequential_check(
            metric.name, self._tests[metric.name], got.counts, min_requests, event=event, **common
        )
        guard = metric.threshold_range
        if verdict.verdict is Verdict.FAIL or guard is None or got.value is None:
            return verdict
        if not guard.holds(got.value):
            reason = f"{got.value:.4g} outside thresholdRange [{guard.min}, {guard.max}]"
            return MetricVerdict(
                metric.name,
                Verdict.FAIL,
                value=got.value,
                requests=got.requests,
                statistic=verdict.statistic,
                reason=reason,
                **common,
            )
        return verdict

    def _canary_template(self, metric: MetricCheck) -> str:
        return metric.query or TEMPLATES[metric.name]

    def _stable_template(self, metric: MetricCheck) -> str:
        return metric.stable_query or TEMPLATES[f"stable-{metric.name}"]

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

    def _windows(
        self, metric: MetricCheck, window: float, now: float
    ) -> tuple[list[float], list[float]]:
        """Canary and stable values over consecutive windows since the analysis began."""
        assert self._first is not None
        count = math.floor((now - self._first) / window + 1e-9) + 1
        lookback = self.spec.judge.lookback
        if lookback is not None:
            count = max(1, min(count, math.floor(lookback / window)))
        start = now - (count - 1) * window
        canary = self._series(self._canary_template(metric), window, start, now)
        stable = self._series(self._stable_template(metric), window, start, now)
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

    def _counts(self, metric: MetricCheck, window: float, now: float) -> Counts | None:
        """Events and requests since the last counted check (the first: one window)."""
        span = now - self._last_counted if self._last_counted is not None else window
        span = max(1.0, span)
        if metric.name == DURATION:
            le = self._slow_bound(now - span)
            if le is None:
                return None
            events = ("canary-slow-requests", "stable-slow-requests", {"le": le})
        else:
            events = ("canary-errors", "stable-errors", {})
        c_ev, s_ev, extra = events
        return Counts(
            canary_events=self._query(TEMPLATES[c_ev], span, now, True, **extra) or 0.0,
            canary_total=self._query(TEMPLATES["canary-requests"], span, now, True) or 0.0,
            stable_events=self._query(TEMPLATES[s_ev], span, now, True, **extra) or 0.0,
            stable_total=self._query(TEMPLATES["stable-requests"], span, now, True) or 0.0,
        )

    def _slow_bound(self, before: float) -> str | None:
        """The bucket bound that makes a request slow, fixed once found.

        It is the smallest bucket bound at or above judge.latencyThresholdMs, else above the
        stable's p99 over the window before ``before``; chosen before the canary's data
        is seen, so the test's null hypothesis does not depend on it.
        """
        if self._slow_le is not None:
            return self._slow_le
        promql = render(TEMPLATES["stable-duration-buckets"], self._values(BASELINE_WINDOW_S))
        labelled = {}
        for labels, value in self.provider.query_vector(promql, before):
            try:
                labelled[float(labels.get("le", ""))] = (labels["le"], value)
            except ValueError:
                continue
        buckets = [(bound, count) for bound, (_, count) in labelled.items()]
        target = self.spec.judge.latency_threshold_ms or histogram_quantile(0.99, buckets)
        bound = None if target is None else slow_bound(buckets, target)
        if bound is not None:
            self._slow_le = safe_bucket_bound(labelled[bound][0])
        return self._slow_le


def _statistic_text(verdict: MetricVerdict) -> str:
    parts = [f"{k}={v}" for k, v in verdict.statistic.items() if v is not None]
    if verdict.classification is not None:
        parts.insert(0, str(verdict.classification))
    return ", ".join(parts)
