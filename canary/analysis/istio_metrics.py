"""PromQL templates for Istio's standard metrics, with Flagger's meaning.

Like Flagger's built-in Istio metrics they read what the destination sidecar reported
(``reporter="destination"``) for one workload in one namespace, over ``{{ interval }}``:

* request-success-rate: 100 x the rate of requests whose response code is not 5xx over the
  rate of all requests, from ``istio_requests_total``. The numerator falls back to 0 when no
  non-5xx series exist yet, so a canary that fails every request reads 0 %, not "no data".
* request-duration: the 99th percentile of ``istio_request_duration_milliseconds``,
  ``histogram_quantile(0.99, ...)`` over the bucket rates summed by ``le`` (milliseconds).

Each exists for the canary workload (``{{ canary }}``, the metric's plain name) and for the
stable one (``{{ stable }}``, prefixed ``stable-``) for comparison.

Judging reads counts, not rates: the counters themselves (each series' last sample within
5 minutes), summed over the workload's series by response code and by histogram bucket
(``canary-counters-by-code``, ``canary-counters-by-le``), at the two ends of a window;
their differences are the window's whole counts (see counts.py). A pod that restarts
leaves its old series at their last value while the new ones count from zero, so the sums
still only grow. The ``increase()`` forms of the same sums stand in for a
window in which a counter was reset. Requests and 5xx per window with ``increase()``
(``canary-requests``, ``canary-errors``) bound the windows of custom Mann-Whitney metrics.
"""

from __future__ import annotations

from canary.analysis.spec import DURATION, SUCCESS_RATE

_REQUESTS = "istio_requests_total"
_BUCKETS = "istio_request_duration_milliseconds_bucket"
_WINDOW = "[{{ interval }}]"
_NOT_5XX = 'response_code!~"5.*"'
# A counter's last sample counts this long: a failed scrape marks series stale, and an
# instant selector would read them as gone (and the next window as everything since).
COUNTER_LOOKBACK = "5m"
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


def _by(label: str, series: str, role: str, window: bool = False) -> str:
    """The counters summed by ``label``: as they are (their last sample within Prometheus's
    lookback, through the gap of a failed scrape) or, with ``window``, their increase."""
    if window:
        return f"sum by ({label}) (increase({series}{_selector(role)}{_WINDOW}))"
    return f"sum by ({label}) (last_over_time({series}{_selector(role)}[{COUNTER_LOOKBACK}]))"


TEMPLATES: dict[str, str] = {
    SUCCESS_RATE: _success_rate("canary"),
    DURATION: _duration("canary"),
    f"stable-{SUCCESS_RATE}": _success_rate("stable"),
    f"stable-{DURATION}": _duration("stable"),
    "canary-requests": _increase(_REQUESTS, "canary"),
    "stable-requests": _increase(_REQUESTS, "stable"),
    "canary-errors": _increase(_REQUESTS, "canary", _5XX),
    "stable-errors": _increase(_REQUESTS, "stable", _5XX),
    "canary-counters-by-code": _by("response_code", _REQUESTS, "canary"),
    "stable-counters-by-code": _by("response_code", _REQUESTS, "stable"),
    "canary-counters-by-le": _by("le", _BUCKETS, "canary"),
    "stable-counters-by-le": _by("le", _BUCKETS, "stable"),
    "canary-increase-by-code": _by("response_code", _REQUESTS, "canary", window=True),
    "stable-increase-by-code": _by("response_code", _REQUESTS, "stable", window=True),
    "canary-increase-by-le": _by("le", _BUCKETS, "canary", window=True),
    "stable-increase-by-le": _by("le", _BUCKETS, "stable", window=True),
}
