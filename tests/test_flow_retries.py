"""Phase tasks retry transient API errors only."""

from __future__ import annotations

import pytest
from kubernetes.client.exceptions import ApiException

from canary.plan import PlanError
from tasks.phases import ChecksFailed, phase_task

pytestmark = pytest.mark.usefixtures("prefect_api_url")


def failing_task(error: Exception, failures: int):
    calls: list[int] = []

    @phase_task(name="flaky", retry_delay_seconds=0, retry_jitter_factor=None)
    def flaky() -> str:
        calls.append(1)
        if len(calls) <= failures:
            raise error
        return "done"

    return flaky, calls


@pytest.mark.parametrize("status", [429, 500, 503])
def test_transient_api_errors_are_retried(status):
    flaky, calls = failing_task(ApiException(status=status, reason="busy"), failures=2)
    assert flaky() == "done"
    assert len(calls) == 3


@pytest.mark.parametrize(
    "error",
    [ChecksFailed("checks failed"), PlanError([]), ApiException(status=422, reason="Invalid")],
)
def test_failed_checks_bad_plans_and_rejected_writes_are_not_retried(error):
    flaky, calls = failing_task(error, failures=1)
    with pytest.raises(type(error)):
        flaky()
    assert len(calls) == 1
