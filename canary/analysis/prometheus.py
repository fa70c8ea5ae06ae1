"""Reading metrics: a small provider interface and its Prometheus implementation."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

import requests
from prometheus_api_client import PrometheusApiClientException, PrometheusConnect
from urllib3.util.retry import Retry

from canary.durations import format_duration

T = TypeVar("T")
Labels = dict[str, str]


class MetricsError(Exception):
    """Metrics could not be read."""


class MetricsUnavailable(MetricsError):
    """Prometheus did not answer, even after retries; the plan says pause or roll back."""


class MetricsQueryError(MetricsError):
    """Prometheus refused the query (bad PromQL, or it returned more than one series)."""


class MetricsProvider(Protocol):
    """Where the analyzer reads metrics; ``at``/``start``/``end`` are Unix seconds."""

    def query(self, promql: str, at: float | None = None) -> float | None:
        """One value; None when the result is empty or not a finite number."""
        ...

    def query_vector(self, promql: str, at: float | None = None) -> list[tuple[Labels, float]]:
        """Every series of an instant query with its labels (non-finite values dropped)."""
        ...

    def query_range(
        self, promql: str, start: float, end: float, step: float
    ) -> list[tuple[float, float]]:
        """One series over time as (timestamp, value); non-finite points dropped."""
        ...


def finite(text: Any) -> float | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


class PrometheusProvider:
    """Prometheus's HTTP API through prometheus-api-client, with timeouts and retries.

    A connection error, a timeout, an unreadable answer or a 5xx/429 answer is retried
    ``retries`` times with exponential backoff; then ``MetricsUnavailable`` is raised.
    A 4xx answer (a query Prometheus cannot run) raises ``MetricsQueryError`` at once:
    retrying cannot help.
    """

    def __init__(
        self,
        url: str,
        timeout: float = 5.0,
        retries: int = 3,
        backoff: float = 0.5,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self._sleep = sleep
        # Our own retry loop decides; the HTTP adapter must not retry underneath it.
        no_retry = Retry(total=0, raise_on_status=False)
        self._client = PrometheusConnect(url=self.url, retry=no_retry, timeout=timeout)

    @classmethod
    def from_spec(cls, spec: Any) -> PrometheusProvider:
        """From a plan's ``analysis.prometheus`` section."""
        return cls(spec.resolved_url(), timeout=spec.timeout, retries=spec.retries)

    def close(self) -> None:
        self._client.close()

    # --- queries -------------------------------------------------------------------------

    def query(self, promql: str, at: float | None = None) -> float | None:
        series = self.query_vector(promql, at)
        if len(series) > 1:
            raise MetricsQueryError(f"{len(series)} series where one was expected: {promql}")
        return series[0][1] if series else None

    def query_vector(self, promql: str, at: float | None = None) -> list[tuple[Labels, float]]:
        params = {} if at is None else {"time": f"{at:.3f}"}
        result = self._call(lambda: self._client.custom_query(promql, params=params))
        if isinstance(result, list) and len(result) == 2 and not isinstance(result[0], dict):
            result = [{"metric": {}, "value": result}]  # a scalar result
        out = []
        for item in result:
            value = finite(item["value"][1])
            if value is not None:
                out.append((dict(item.get("metric", {})), value))
        return out

    def query_range(
        self, promql: str, start: float, end: float, step: float
    ) -> list[tuple[float, float]]:
        begin = datetime.fromtimestamp(start, UTC)
        finish = datetime.fromtimestamp(end, UTC)
        result = self._call(
            lambda: self._client.custom_query_range(
                promql, start_time=begin, end_time=finish, step=format_duration(step)
            )
        )
        if len(result) > 1:
            raise MetricsQueryError(f"{len(result)} series where one was expected: {promql}")
        points = result[0]["values"] if result else []
        return [(float(t), v) for t, raw in points if (v := finite(raw)) is not None]

    # --- retries -------------------------------------------------------------------------

    def _call(self, request: Callable[[], T]) -> T:
        last: Exception | None = None
        for attempt in range(self.retries + 1):
            if attempt:
                self._sleep(min(self.backoff * 2 ** (attempt - 1), 30.0))
            try:
                return request()
            except requests.RequestException as exc:  # refused, reset, timed out, garbled
                last = exc
            except PrometheusApiClientException as exc:
                if not _retryable(exc):
                    raise MetricsQueryError(f"Prometheus refused the query: {exc}") from None
                last = exc
        raise MetricsUnavailable(
            f"Prometheus at {self.url} did not answer after {self.retries + 1} attempts: "
            f"{_short(last)}"
        )


def _retryable(exc: PrometheusApiClientException) -> bool:
    text = str(exc)
    return any(f"HTTP Status Code {code}" in text for code in (429, 500, 502, 503, 504))


def _short(exc: Exception | None) -> str:
    text = f"{type(exc).__name__}: {exc}" if exc else "no answer"
    return text if len(text) < 300 else text[:297] + "..."
