"""The production path: the deployed pipeline on a worker, answered from Slack and the UI."""

from tests.support.production_fixtures import (  # noqa: F401 - fixtures of this lane
    cluster,
    explain,
    production,
    production_api,
    slack,
    started_runs,
)
