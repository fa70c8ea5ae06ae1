"""The Prefect UI in a real browser, over the deployed pipeline on a worker."""

from tests.support.production_fixtures import (  # noqa: F401 - fixtures of this lane
    cluster,
    explain,
    production_api,
    production_fixture,
    slack,
    started_runs,
)

production = production_fixture(ui=True)
