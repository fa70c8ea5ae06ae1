"""Fixtures over `production_stack()`, for the lanes that drive the deployed pipeline.

A lane's conftest imports them and makes its stack with `production_fixture`. The stack
lives while the lane's package runs, so the xdist worker that runs the lane does not keep
a Prefect server, a worker and Prometheus busy beside the files it runs afterwards; this
process's Prefect client points at the stack's server only inside the lane's modules, so
tests of other files on the same worker keep the root conftest's server.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from uuid import UUID

import pytest

from tests.support.deployments import cancel_unfinished
from tests.support.production import ProductionStack, production_stack
from tests.support.sandbox_slot import SandboxSlot
from tests.support.slack_stub import SlackStub


def production_fixture(ui: bool) -> Callable[..., Iterator[ProductionStack]]:
    """The lane's `production` fixture: its stack, with the Prefect UI served or not."""

    @pytest.fixture(scope="package")
    def production(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProductionStack]:
        with production_stack(tmp_path_factory.mktemp("production"), ui=ui) as stack:
            yield stack

    return production


@pytest.fixture(scope="module", autouse=True)
def production_api(production: ProductionStack) -> Iterator[str]:
    """This process's Prefect settings name the stack's server while the module runs."""
    from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL, temporary_settings

    updates = {PREFECT_API_URL: production.server.api_url, PREFECT_UI_URL: production.server.url}
    with temporary_settings(updates=updates):
        yield production.server.api_url


@pytest.fixture
def cluster(production: ProductionStack) -> SandboxSlot:
    """A fresh BookInfo (reviews v1) behind the addresses the worker knows."""
    production.slot.fresh("healthy", rps=200)  # 40 canary requests a second at 20 %
    return production.slot


@pytest.fixture
def slack(production: ProductionStack) -> SlackStub:
    """The stub, with a clean record for this test."""
    production.slack.reset()
    return production.slack


@pytest.fixture
def started_runs(production: ProductionStack) -> Iterator[list[UUID]]:
    """Runs the test started; those still open at its end are cancelled."""
    runs: list[UUID] = []
    yield runs
    cancel_unfinished(runs)


@pytest.fixture
def explain(production: ProductionStack) -> Callable[[], str]:
    """What to add to a failure message: the worker's log."""
    return production.diagnostics


__all__ = [
    "cluster",
    "explain",
    "production_api",
    "production_fixture",
    "slack",
    "started_runs",
]
