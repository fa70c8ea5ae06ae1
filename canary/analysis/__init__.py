"""Canary judgement: metric checks against Prometheus and the judges that decide.

Construct one ``Analyzer`` per release and call ``check()`` once per interval.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

# Loaded on first use: canary.plan imports canary.analysis.spec while it is being defined.
_EXPORTS = {
    "Analyzer": "canary.analysis.analyzer",
    "AnalysisResult": "canary.analysis.analyzer",
    "Decision": "canary.analysis.analyzer",
    "Verdict": "canary.analysis.judges",
    "MetricVerdict": "canary.analysis.judges",
    "MetricsProvider": "canary.analysis.prometheus",
    "PrometheusProvider": "canary.analysis.prometheus",
    "MetricsUnavailable": "canary.analysis.prometheus",
    "MetricsQueryError": "canary.analysis.prometheus",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(_EXPORTS[name]), name)
