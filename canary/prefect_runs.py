"""Reading a flow run's state from the Prefect API (gates, stop watch, CLI)."""

from __future__ import annotations

from typing import Any


class NoSuchRun(LookupError):
    pass


def run_state(run_id: str) -> Any:
    """The run's current State (None before it has one); NoSuchRun when there is no run."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            return client.read_flow_run(run_id).state
        except ObjectNotFound:
            raise NoSuchRun(f"no flow run {run_id}") from None
