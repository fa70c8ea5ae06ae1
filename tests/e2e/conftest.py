"""The production path: the deployed pipeline on a worker, answered from Slack and the UI's
requests. No page is opened: the Prefect server serves no UI."""

from tests.support.production_fixtures import (  # noqa: F401 - fixtures of this lane
    cluster,
    explain,
    production_api,
    production_fixture,
    slack,
    started_runs,
)

production = production_fixture(ui=False)
