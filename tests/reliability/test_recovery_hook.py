"""The state hooks rebuild a stopped run's release from its parameters, as the run built it.

A hook that runs without the run's live guard (in a runner, or after the guard let go) only
has the flow run's parameters: those of `canary_release` (an inline plan) or of the
deployment's `release` (a plan file in the configs directory, `version`/`image` overrides).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from prefect.client.orchestration import get_client

from canary.cluster import api_client
from canary.identity import release_key
from canary.lease import (
    IDENTITY,
    LEASE,
    OUTCOME,
    RouteLease,
    annotations_of,
    lease_of,
)
from canary.plan import plan_from_dict
from canary.plan.configs import CONFIGS_ENV
from canary.plan.versions import with_canary
from canary.planner import PHASE_ANNOTATION
from canary.recovery import release_from_parameters, roll_back_stopped_run
from flows.deployed import lock_name
from tests.reliability.helpers import assert_all_on_stable, write_plan
from tests.support.waiting import wait_until

V3 = "docker.io/istio/examples-bookinfo-reviews-v3:1.20.0"
LONG_STEP = {"steps": [{"weight": 20, "hold": "30s"}], "analysis": {"interval": 1}}


def stopped_run(**parameters: Any) -> SimpleNamespace:
    """A flow run as a runner's hook gets it: an id and the parameters the API stored."""
    return SimpleNamespace(id=uuid.uuid4(), parameters=parameters)


@pytest.fixture
def configs(monkeypatch, tmp_path: Path, plan_data) -> Path:
    """A configs directory holding reviews.yaml; the process runs elsewhere."""
    directory = tmp_path / "configs"
    directory.mkdir()
    write_plan(directory / "reviews.yaml", plan_data())
    monkeypatch.setenv(CONFIGS_ENV, str(directory))
    monkeypatch.chdir(tmp_path)
    return directory


def test_an_inline_plan_is_the_release(plan_data):
    run = stopped_run(
        plan=plan_data(), kubeconfig="kc", context="kind", mesh_url="http://127.0.0.1:9080"
    )

    release = release_from_parameters(run)

    assert release.plan == plan_from_dict(plan_data())
    assert release.release_id == str(run.id)
    target = release.target
    assert (target.kubeconfig, target.kube_context, target.mesh_url) == (
        "kc",
        "kind",
        "http://127.0.0.1:9080",
    )


def test_the_target_of_an_inline_release_run_is_rebuilt(plan_data):
    target = {"kubeconfig": "kc", "kube_context": "kind", "mesh_url": None}
    release = release_from_parameters(stopped_run(plan=plan_data(), target=target))

    assert (release.target.kubeconfig, release.target.kube_context) == ("kc", "kind")


def test_a_plan_file_is_read_from_the_configs_directory(configs, plan_data):
    ctx = release_from_parameters(stopped_run(plan="reviews.yaml"))

    assert ctx.plan == plan_from_dict(plan_data())


def test_the_version_and_image_overrides_are_the_release(configs):
    ctx = release_from_parameters(stopped_run(plan="reviews.yaml", version="v3", image=V3))

    assert (ctx.plan.canary.version, ctx.plan.canary.image) == ("v3", V3)
    assert release_key(ctx.plan) == "default/reviews/v3"


@pytest.mark.parametrize(
    ("parameters", "why"),
    [
        ({"plan": "../elsewhere.yaml"}, "plans are read from there only"),
        ({"plan": "missing.yaml"}, "plans are read from there only"),
        ({"plan": "reviews.yaml", "version": "v3"}, "give the image of v3"),
        ({"plan": {"service": "reviews"}}, "<inline plan>"),
    ],
    ids=["outside the configs directory", "no such file", "no image", "invalid inline plan"],
)
def test_a_plan_that_cannot_be_rebuilt_is_no_release(configs, plan_data, caplog, parameters, why):
    write_plan(configs.parent / "elsewhere.yaml", plan_data())
    caplog.set_level(logging.WARNING, logger="canary.recovery")

    assert release_from_parameters(stopped_run(**parameters)) is None
    assert why in caplog.text


def test_a_hook_whose_plan_names_another_release_leaves_it_alone(
    configs, start_sandbox, plan_data, caplog
):
    box = start_sandbox("healthy")
    run = stopped_run(plan="reviews.yaml", version="v3", image=V3, kubeconfig=box.kubeconfig)
    # The run took the service for v2: its plan file said v2 then, it says v3 now.
    lease = RouteLease(api_client(box.kubeconfig), plan_from_dict(plan_data()), ttl=30)
    lease.acquire("release-1", str(run.id))
    caplog.set_level(logging.WARNING, logger="canary.recovery")

    roll_back_stopped_run(None, run, SimpleNamespace(name="Crashed", message=None))

    assert "holds default/reviews/v2, not default/reviews/v3: not rolled back" in caplog.text
    held = lease_of(box.get("virtualservices", "reviews"))
    assert (held.release_id, held.holder) == ("release-1", str(run.id))


def test_a_crashed_deployment_run_of_a_plan_file_and_another_version_rolls_back(
    start_sandbox, plan_data, prefect_api_url, tmp_path
):
    box = start_sandbox("healthy")
    configs = tmp_path / "configs"
    configs.mkdir()
    write_plan(configs / "reviews.yaml", plan_data(**LONG_STEP))
    released = with_canary(plan_from_dict(plan_data(**LONG_STEP)), "v3", V3)
    env = os.environ | {
        "PREFECT_API_URL": prefect_api_url,
        "PREFECT_HOME": str(tmp_path),
        CONFIGS_ENV: str(configs),
    }
    # The deployment's flow, called with the parameters the UI's form would give it.
    script = (
        "import sys; from flows.deployed import release; "
        "release('reviews.yaml', 'v3', sys.argv[1], kubeconfig=sys.argv[2], mesh_url=sys.argv[3])"
    )
    command = [sys.executable, "-c", script, V3, box.kubeconfig, box.sandbox.ingress_url]
    worker = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        notes = wait_until(lambda: at_step_1(box), 90, interval=0.02, message="step-1")
        assert box.get("deployments", "reviews-v3") is not None
        # Its guard lets go first: on_crashed, in the run's process, has only its parameters.
        worker.send_signal(signal.SIGTERM)
        output = worker.communicate(timeout=60)[0].decode()
    finally:
        worker.kill()

    assert notes[IDENTITY] == "default/reviews/v3"
    assert "Running hook 'roll_back_stopped_run'" in output, output
    assert_all_on_stable(box, released)
    notes = annotations_of(box.get("virtualservices", "reviews"))
    assert LEASE not in notes and notes[OUTCOME] == "rolled-back"
    with get_client(sync_client=True) as client:  # the service's lock is free for the next
        assert client.read_global_concurrency_limit_by_name(lock_name(released)).active_slots == 0


def at_step_1(box: Any) -> dict[str, str] | None:
    notes = annotations_of(box.get("virtualservices", "reviews"))
    return notes if notes.get(PHASE_ANNOTATION) == "step-1" else None
