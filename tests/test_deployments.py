"""The Prefect deployments of deploy/prefect.yaml, deployed and run as in production.

`prefect deploy --all` against the session's Prefect server, a process worker on the
`canary` pool (a subprocess, like the worker Deployment in Kubernetes), and flow runs
created through the API the way the UI's parameter form creates them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
import yaml
from prefect.concurrency.sync import concurrency
from prefect.exceptions import PrefectHTTPStatusError

from canary.planner import canary_weight
from flows.deployed import ReleaseLocked, ensure_lock, lock_name, release
from tests.conftest import _fast_plan_data
from tests.support.deployments import (
    RELEASE,
    TRAIN,
    artifacts_of,
    client,
    create_run,
    deploy_all,
    deployment,
    logs_of,
    state_of,
    wait_final,
    wait_logged,
)
from tests.support.worker import PrefectWorker


@pytest.fixture(scope="module")
def configs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The worker's configs directory: plan files a run may name (the form offers them)."""
    directory = tmp_path_factory.mktemp("worker-configs")
    (directory / "reviews.yaml").write_text(yaml.safe_dump(_fast_plan_data()))
    return directory


@pytest.fixture(scope="module")
def deployed(prefect_api_url: str, configs: Path) -> Iterator[dict[str, str]]:
    """`prefect deploy --all` done, and a process worker polling the pool every second."""
    env = os.environ | {"PREFECT_API_URL": prefect_api_url}
    deploy_all(env | {"CANARY_CONFIGS_DIR": str(configs)})
    worker_env = env | {"CANARY_CONFIGS_DIR": str(configs)}
    with PrefectWorker(worker_env, configs / "worker.log"):
        yield env


def fast_plan_json(plan_data: Any, **overrides: Any) -> dict[str, Any]:
    from canary.plan import plan_from_dict

    plan = plan_from_dict(plan_data(**overrides))
    return plan.model_dump(mode="json", by_alias=True, exclude_none=True)


# --- the parameter form ------------------------------------------------------------------


def test_the_form_is_typed_from_the_plan_model(deployed):
    found = deployment(RELEASE)

    assert found.enforce_parameter_schema is True
    schema = found.parameter_openapi_schema
    plan = schema["properties"]["plan"]
    files = next(choice for choice in plan["anyOf"] if choice.get("title") == "Plan file")
    assert files.get("enum", [files.get("const")]) == ["reviews.yaml"]
    assert {"$ref": "#/definitions/ReleasePlan"} in plan["anyOf"]
    assert "configs directory" in plan["description"]
    definitions = schema["definitions"]
    cleanup = definitions["CleanupSpec"]["properties"]["action"]
    assert cleanup["enum"] == ["delete", "scaleToZero"]
    threshold = definitions["AnalysisSpec"]["properties"]["threshold"]
    assert threshold["minimum"] == 1 and threshold["description"]
    check = definitions["HttpCheck"]["properties"]
    assert (check["expectStatus"]["minimum"], check["expectStatus"]["maximum"]) == (100, 599)
    assert schema["properties"]["lock_timeout"]["maximum"] == 86_400
    assert "pendingVersion" in definitions["ScheduleSpec"]["properties"]


@pytest.mark.parametrize(
    ("change", "what"),
    [
        ({"cleanup": {"action": "explode"}}, "an enum"),
        ({"analysis": {"interval": 1, "threshold": 0}}, "a lower bound"),
        ({"promotion": {"hold": "soon"}}, "a duration"),
        ({"surprise": True}, "an unknown field"),
    ],
)
def test_a_plan_violating_the_schema_is_refused(deployed, plan_data, change, what):
    plan = fast_plan_json(plan_data) | change

    with pytest.raises(PrefectHTTPStatusError) as refused:
        create_run(RELEASE, {"plan": plan})

    response = refused.value.response
    assert response.status_code == 409, what
    assert "Error creating flow run: Validation failed" in response.text, what


def test_parameters_violating_the_schema_are_refused(deployed):
    for parameters in (
        {"plan": "reviews.yaml", "version": "not a label!"},
        {"plan": "reviews.yaml", "lock_timeout": -1},
        {"plan": 42},
        {"plan": "review.yaml"},  # not a plan file of the configs directory
        {"plan": "configs/reviews.yaml"},
    ):
        with pytest.raises(PrefectHTTPStatusError) as refused:
            create_run(RELEASE, parameters)
        assert refused.value.response.status_code == 409, parameters


# --- a release from the form -------------------------------------------------------------


def test_a_run_waits_for_the_service_lock_then_releases(
    deployed, configs, start_sandbox, plan_data
):
    box = start_sandbox("healthy")
    name = lock_name(release_plan(plan_data()))
    ensure_lock(name)

    with concurrency(name, strict=True):  # another release of reviews is under way
        run = create_run(
            RELEASE,
            {
                "plan": "reviews.yaml",
                "kubeconfig": box.kubeconfig,
                "mesh_url": box.sandbox.ingress_url,
            },
        )
        wait_logged(run, "another release of default/reviews is running", timeout=60)
        assert state_of(run).type.value == "RUNNING"
        assert box.writes() == []

    state = wait_final(run)

    assert state.type.value == "COMPLETED", (state.message, logs_of(run))
    plan = release_plan(plan_data())
    assert canary_weight(plan, box.get("virtualservices", "reviews")) == 100
    assert box.get("deployments", "reviews-v1") is None
    artifacts = artifacts_of(run)
    assert "# reviews v1 → v2: promoted" in artifacts["markdown"].data
    assert "data:image/png;base64," in artifacts["markdown"].data
    assert [row["phase"] for row in json.loads(artifacts["table"].data)][-1] == "cleanup"
    assert artifacts["progress"].data == 100.0


def test_a_run_refuses_after_waiting_too_long_for_the_lock(prefect_api_url, fast_plan):
    plan = fast_plan()
    ensure_lock(lock_name(plan))
    with concurrency(lock_name(plan), strict=True):
        state = release(plan, lock_timeout=2, return_state=True)

    assert state.is_failed()
    assert isinstance(state.result(raise_on_failure=False), ReleaseLocked)
    assert "another release of default/reviews kept running for more than 2s" in state.message


# --- the release train -------------------------------------------------------------------


def test_the_release_train_starts_a_release_per_pending_plan(
    deployed, start_sandbox, plan_data, tmp_path
):
    train = deployment(TRAIN)
    assert [(s.active, s.schedule.cron) for s in train.schedules] == [(True, "0 9-17 * * 1-5")]
    box = start_sandbox("healthy")
    pending = plan_data(schedule={"pendingVersion": "v3", "pendingImage": "reviews:v3"})
    idle = plan_data(service="ratings", schedule={"pendingVersion": "v1"})
    (tmp_path / "reviews.yaml").write_text(yaml.safe_dump(pending))
    (tmp_path / "ratings.yaml").write_text(yaml.safe_dump(idle))

    run = create_run(
        TRAIN,
        {
            "configs": str(tmp_path),
            "kubeconfig": box.kubeconfig,
            "mesh_url": box.sandbox.ingress_url,
        },
    )

    state = wait_final(run)
    assert state.type.value == "COMPLETED", (state.message, logs_of(run))
    started = started_release(run)
    wait_logged(run, "ratings.yaml: nothing pending")
    state = wait_final(started.id)
    assert state.type.value == "COMPLETED", (state.message, logs_of(started.id))
    assert started.name == "reviews-v3"
    v3 = box.get("deployments", "reviews-v3")
    assert v3["spec"]["template"]["spec"]["containers"][0]["image"] == "reviews:v3"
    assert box.get("deployments", "reviews-v1") is None


def started_release(train_run: UUID) -> Any:
    """The release run the train started (the only one of this module with its tags)."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags

    tags = FlowRunFilterTags(all_=["release-train", "service:default/reviews"])
    with client() as c:
        runs = c.read_flow_runs(flow_run_filter=FlowRunFilter(tags=tags))
    assert len(runs) == 1, [r.name for r in runs]
    wait_logged(train_run, f"(flow run {runs[0].id})")
    return runs[0]


def release_plan(data: dict[str, Any]) -> Any:
    from canary.plan import plan_from_dict

    return plan_from_dict(data)
