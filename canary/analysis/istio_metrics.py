"""PromQL templates for Istio's standard metrics, with Flagger's meaning.

Like Flagger's built-in Istio metrics they read what the destination sidecar reported
(``reporter="destination"``) for one workload in one namespace, over ``{{ interval }}``:

* request-success-rate: 100 x the rate of requests whose response code is not 5xx over the
  rate of all requests, from ``istio_requests_total``. The numerator falls back to 0 when no
  non-5xx series exist yet, so a canary that fails every request reads 0 %, not "no data".
* request-duration: the 99th percentile of ``istio_request_duration_milliseconds``,
  ``histogram_quantile(0.99, ...)`` over the bucket rates summed by ``le`` (milliseconds).

Each exists for the canary workload (``{{ canary }}``, the metric's plain name) and for the
stable one (``{{ stable }}``, prefixed ``stable-``) for comparison. Counts (requests, 5xx,
requests slower than a bucket bound ``{{ le }}``) over the window feed the no-data rule and
the sequential judge; the duration buckets by ``le`` give the stable's latency profile.
"""

from __future__ import annotations

from canary.analysis.spec import DURATION, SUCCESS_RATE

_REQUESTS = "istio_requests_total"
_BUCKETS = "istio_request_duration_milliseconds_bucket"
_COUNT = "istio_request_duration_milliseconds_count"
_WINDOW = "[{{ interval }}]"
_NOT_5XX = 'response_code!~"5.*"'
_5XX = 'response_code=~"5.*"'


def _selector(role: str, extra: str = "") -> str:
    labels = (
        'reporter="destination",destination_workload_namespace="{{ namespace }}",'
        'destination_workload="{{ ' + role + ' }}"'
    )
    return "{" + labels + ("," + extra if extra else "") + "}"


def _increase(series: str, role: str, extra: str = "") -> str:
    return "sum(increase(" + series + _selector(role, extra) + _WINDOW + "))"


def _success_rate(role: str) -> str:
    ok = "sum(rate(" + _REQUESTS + _selector(role, _NOT_5XX) + _WINDOW + "))"
    every = "sum(rate(" + _REQUESTS + _selector(role) + _WINDOW + "))"
    return f"({ok} or vector(0)) / {every} * 100"


def _duration(role: str) -> str:
    rates = "rate(" + _BUCKETS + _selector(role) + _WINDOW + ")"
    return f"histogram_quantile(0.99, sum by (le) ({rates}))"


def _buckets(role: str) -> str:
    return "sum by (le) (increase(" + _BUCKETS + _selector(role) + _WINDOW + "))"


def _slow(role: str) -> str:
    return _increase(_COUNT, role) + " - " + _increase(_BUCKETS, role, 'le="{{ le }}"')


TEMPLATES: dict[str, str] = {
    SUCCESS_RATE: _success_rate("canary"),
    DURATION: _duration("canary"),
    f"stable-{SUCCESS_RATE}": _success_rate("stable"),
    f"stable-{DURATION}": _duration("stable"),
    "canary-requests": _increase(_REQUESTS, "canary"),
    "stable-requests": _increase(_REQUESTS, "stable"),
    "canary-errors": _increase(_REQUESTS, "canary", _5XX),
    "stable-errors": _increase(_REQUESTS, "stable", _5XX),
    "canary-duration-buckets": _buckets("canary"),
    "stable-duration-buckets": _buckets("stable"),
    "canary-slow-requests": _slow("canary"),
    "stable-slow-requests": _slow("stable"),
}
