"""deploy/prefect.yaml deployed as in production, and flow runs created and followed through them.

`deploy_all` makes the `canary` process pool (`create_pool`) and runs `prefect deploy --all`;
runs are created as the Prefect UI's Custom run form creates them (`create_run_as_form`,
the same request body) or through Prefect's client (`create_run`). The helpers below the
line read a run back: its state, logs and artifacts. They talk to the server of the current
Prefect settings (PREFECT_API_URL).
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any
from uuid import UUID

import httpx
from prefect.client.orchestration import SyncPrefectClient, get_client

from tests.conftest import REPO
from tests.support.waiting import wait_until

POOL = "canary"
RELEASE = "canary-release/canary-release"
TRAIN = "release-train/release-train"
FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
PREFECT = [sys.executable, "-m", "prefect"]


# What deploy/prefect.yaml's job variables read from the environment of `prefect deploy`
# (on a process pool they become the run's environment: empty means "the default").
JOB_ENV = {
    "CANARY_IMAGE": "canary-release:test",
    "PROMETHEUS_URL": "",
    "PREFECT_UI_URL": "",
    "CANARY_PUSHGATEWAY_URL": "",
}


def create_pool(api_url: str) -> None:
    """The `canary` work pool of type `process`, as `prefect work-pool create` makes it."""
    body = {"name": POOL, "type": "process"}
    response = httpx.post(f"{api_url}/work_pools/", json=body, timeout=60)
    assert response.status_code in (201, 409), response.text  # 409: it exists already


def deploy_all(env: dict[str, str]) -> None:
    """The `canary` process pool, then `prefect deploy --all` from the repository's root.

    The job variables' environment defaults to JOB_ENV, beneath what `env` sets.
    """
    create_pool(env["PREFECT_API_URL"])
    done = subprocess.run(
        [*PREFECT, "--no-prompt", "deploy", "--all", "--prefect-file", "deploy/prefect.yaml"],
        cwd=REPO,
        env=JOB_ENV | env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stdout + done.stderr


RETRIED = {429, 502, 503}  # what Prefect's own client retries: SQLite busy, overload


def api_request(method: str, path: str, **options: Any) -> httpx.Response:
    """A request to the current server's API, retried as Prefect's client retries it."""
    from prefect.settings import PREFECT_API_URL

    url = f"{PREFECT_API_URL.value()}{path}"

    def answered() -> httpx.Response | None:
        response = httpx.request(method, url, timeout=30, **options)
        return None if response.status_code in RETRIED else response

    return wait_until(answered, 60, interval=1.0, message=f"{method} {path} to be answered")


def client() -> SyncPrefectClient:
    return get_client(sync_client=True)


def deployment(name: str) -> Any:
    with client() as c:
        return c.read_deployment_by_name(name)


def create_run(name: str, parameters: dict[str, Any]) -> UUID:
    """A flow run created through Prefect's client (`run_deployment`'s request)."""
    with client() as c:
        return c.create_flow_run_from_deployment(deployment(name).id, parameters=parameters).id


def form_request(
    name: str, parameters: dict[str, Any], run_name: str, enforce: bool = True
) -> dict[str, Any]:
    """The body the UI's Custom run form posts: every parameter, defaults filled in.

    `enforce` is the form's "Enforce Parameter Schema" switch.
    """
    found = deployment(name)
    schema = found.parameter_openapi_schema or {}
    properties = schema.get("properties", {})
    defaults = {key: prop["default"] for key, prop in properties.items() if "default" in prop}
    return {
        "name": run_name,
        "work_queue_name": found.work_queue_name,
        "empirical_policy": {
            "resuming": False,
            "max_retries": 0,
            "retry_delay_seconds": 0,
            "retries": 0,
            "retry_delay": 0,
        },
        "state": {
            "type": "SCHEDULED",
            "state_details": {
                "pause_reschedule": False,
                "deferred": False,
                "untrackable_result": False,
                "scheduled_time": None,
            },
            "message": "",
        },
        "tags": list(found.tags),
        "job_variables": {},
        "enforce_parameter_schema": enforce,
        "parameters": defaults | (found.parameters or {}) | parameters,
    }


def post_form(
    name: str, parameters: dict[str, Any], run_name: str = "from-the-form", enforce: bool = True
) -> Any:
    """POST /api/deployments/{id}/create_flow_run as the form does; the HTTP response."""
    body = form_request(name, parameters, run_name, enforce)
    return api_request("POST", f"/deployments/{deployment(name).id}/create_flow_run", json=body)


def create_run_as_form(
    name: str, parameters: dict[str, Any], run_name: str = "from-the-form"
) -> UUID:
    response = post_form(name, parameters, run_name)
    assert response.status_code == 201, f"{response.status_code} {response.text}"
    return UUID(response.json()["id"])


# --- reading a run back -------------------------------------------------------------------


def state_of(run_id: UUID | str) -> Any:
    with client() as c:
        return c.read_flow_run(run_id).state


def wait_final(run_id: UUID | str, timeout: float = 60) -> Any:
    wait_until(
        lambda: state_of(run_id).type.value in FINAL,
        timeout,
        interval=0.5,
        message=f"flow run {run_id} to finish",
    )
    return state_of(run_id)


def logs_of(run_id: UUID | str) -> str:
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    with client() as c:
        logs = c.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[UUID(str(run_id))])))
    return "\n".join(entry.message for entry in logs)


def wait_logged(run_id: UUID | str, text: str, timeout: float = 15) -> None:
    """Logs reach the server in batches, possibly after the run's final state."""
    wait_until(lambda: text in logs_of(run_id), timeout, interval=0.5, message=repr(text))


def artifacts_of(run_id: UUID | str) -> dict[str, Any]:
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with client() as c:
        found = c.read_artifacts(
            artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[UUID(str(run_id))])
            )
        )
    return {artifact.type: artifact for artifact in found}


def cancel_unfinished(run_ids: list[UUID], timeout: float = 60) -> None:
    """Cancel the runs that are still open and wait until they end.

    No release outlives its test: one still running would hold the service's release slot
    that the next test's release waits for.
    """
    from prefect.states import Cancelling

    open_runs = [run_id for run_id in run_ids if state_of(run_id).type.value not in FINAL]
    with client() as c:
        for run_id in open_runs:
            c.set_flow_run_state(run_id, Cancelling(), force=True)
    for run_id in open_runs:
        wait_final(run_id, timeout)
