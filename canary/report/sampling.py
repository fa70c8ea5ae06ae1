"""The metrics a report plots: Istio's success rate and p99 latency of canary and stable.

They are read from Prometheus with range queries over the release window, using the same
PromQL templates as the analysis (Istio's standard metrics, per workload), so the plot
shows what the analysis could see. Without a Prometheus the report has no metric curves.
"""

from __future__ import annotations

import logging
import os
from datetime import datetime
from typing import Any

from canary.analysis.istio_metrics import TEMPLATES
from canary.analysis.spec import DURATION, SUCCESS_RATE, render, safe_values, safe_window
from canary.plan import ReleasePlan
from canary.report.recorder import MetricSeries, Quantity, Role

log = logging.getLogger(__name__)

MAX_POINTS = 200  # per curve: enough for a smooth plot, small for Prometheus
MIN_WINDOW_S = 5.0  # rate() needs at least two scrapes inside its window

_QUERIES: dict[tuple[Quantity, Role], str] = {
    ("success-rate", "canary"): SUCCESS_RATE,
    ("success-rate", "stable"): f"stable-{SUCCESS_RATE}",
    ("latency-p99", "canary"): DURATION,
    ("latency-p99", "stable"): f"stable-{DURATION}",
}


def prometheus_url(plan: ReleasePlan) -> str | None:
    """The Prometheus to sample: the plan's, $PROMETHEUS_URL, or Istio's when analysing.

    A plan without metric checks and without an address may have no Prometheus at all,
    and a report must not wait on an address that nobody promised.
    """
    spec = plan.analysis.prometheus
    if spec.url or os.environ.get("PROMETHEUS_URL") or plan.analysis.metrics:
        return spec.resolved_url()
    return None


def sampling_plan(seconds: float, interval: float) -> tuple[float, float]:
    """(step, window) for a release of `seconds`: at most MAX_POINTS points per curve."""
    step = max(1.0, round(seconds / MAX_POINTS))
    window = max(MIN_WINDOW_S, 2 * step, min(interval, 60.0))
    return step, window


def sample_metrics(
    plan: ReleasePlan, started: datetime, finished: datetime, provider: Any | None = None
) -> tuple[list[MetricSeries], str]:
    """The four curves over [started, finished] and a line saying where they came from.

    Never raises: a report without curves is better than none.
    """
    url = prometheus_url(plan)
    if url is None and provider is None:
        return [], "no Prometheus for this plan: the plot shows the health rounds"
    start, end = started.timestamp(), max(finished.timestamp(), started.timestamp() + 1)
    step, window = sampling_plan(end - start, plan.analysis.interval)
    values = safe_values(
        plan.namespace, plan.service, plan.canary_deployment, plan.stable_deployment
    ) | {"interval": safe_window(window)}
    try:
        provider = provider or _provider(plan, url or "")
        series = [
            MetricSeries(
                quantity=quantity,
                role=role,
                points=provider.query_range(render(TEMPLATES[name], values), start, end, step),
            )
            for (quantity, role), name in _QUERIES.items()
        ]
    except Exception as exc:  # an unreachable Prometheus leaves the report without curves
        log.warning("could not sample metrics for the report: %s", exc)
        return [], f"Prometheus at {url} could not be read ({type(exc).__name__})"
    where = f"Prometheus at {url}" if url else "the metrics provider"
    return series, f"{where}: Istio metrics per workload, every {step:g}s over {window:g}s"


def _provider(plan: ReleasePlan, url: str) -> Any:
    from canary.analysis.prometheus import PrometheusProvider

    # One retry at most: the release is over, the report must not hold up the run.
    return PrometheusProvider(url, timeout=plan.analysis.prometheus.timeout, retries=1)
