"""A release changes only what it owns: plans that point at other objects are refused before
any write, and rollback never removes a Deployment the release did not create."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from canary.cli import main
from canary.cluster import Cluster, api_client
from canary.manifests import OWNER_ANNOTATION
from canary.release import Release
from canary.rollback import land_rollback
from tasks import phases
from tests.reliability.helpers import write_plan

pytestmark = pytest.mark.usefixtures("prefect_api_url")


def refused(tmp_path: Path, box: Any, capsys: Any, data: dict[str, Any]) -> str:
    """`canary run` of the plan: exit 2 and one line; nothing written to the cluster."""
    plan = write_plan(tmp_path / "plan.yaml", data)
    before = {d: box.get("deployments", d) for d in ("reviews-v1", "ratings-v1")}
    box.api.clear_requests()
    code = main(["run", str(plan), "--kubeconfig", box.kubeconfig])
    err = capsys.readouterr().err
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert box.writes() == [], box.writes()
    for name, deployment in before.items():  # still there, untouched
        now = box.get("deployments", name)
        assert now is not None and now["metadata"] == deployment["metadata"], name
    return err


@pytest.mark.parametrize(
    ("canary", "field"),
    [
        ({"version": "v2", "image": "reviews:v2", "deployment": "reviews-v1"}, "canary.deployment"),
        ({"version": "v2", "image": "reviews:v2", "deployment": "ratings-v1"}, "canary.deployment"),
    ],
    ids=["the stable", "another service's"],
)
def test_a_canary_named_like_an_existing_deployment_is_refused(
    start_sandbox, plan_data, tmp_path, capsys, canary, field
):
    box = start_sandbox("healthy")
    err = refused(tmp_path, box, capsys, plan_data(canary=canary))
    assert field in err and canary["deployment"] in err, err


def test_a_stable_that_is_another_services_deployment_is_refused(
    start_sandbox, plan_data, tmp_path, capsys
):
    box = start_sandbox("healthy")
    err = refused(
        tmp_path, box, capsys, plan_data(stable={"version": "v1", "deployment": "ratings-v1"})
    )
    assert "stable.deployment: the pods of ratings-v1 are not the Service reviews's" in err, err


def test_a_version_label_the_service_selects_on_is_refused(
    start_sandbox, plan_data, tmp_path, capsys
):
    box = start_sandbox("healthy")
    err = refused(tmp_path, box, capsys, plan_data(routing={"versionLabel": "app"}))
    assert "routing.versionLabel: the Service reviews selects on 'app'" in err, err


def test_a_canary_a_release_of_its_version_left_scaled_down_is_taken_up_again(
    start_sandbox, fast_plan, plan_data
):
    from tests.support.releases import release_outcome

    box = start_sandbox("healthy")
    impossible = plan_data()["tests"] | {"checks": [{"name": "never", "expectStatus": 418}]}
    first = release_outcome(
        fast_plan(tests=impossible, rollback={"canaryAction": "scaleToZero"}), box
    )
    left = box.get("deployments", "reviews-v2")
    assert first.result.outcome == "rolled-back" and left["spec"]["replicas"] == 0
    assert left["metadata"]["annotations"][OWNER_ANNOTATION] == "default/reviews/v2"

    again = release_outcome(fast_plan(), box)  # another run of v2: the same release key

    assert again.outcome == "promoted", again
    assert box.get("deployments", "reviews-v2")["metadata"]["uid"] == left["metadata"]["uid"]


def test_rollback_leaves_alone_a_canary_it_did_not_create(start_sandbox, fast_plan):
    box = start_sandbox("healthy")
    plan = fast_plan()
    release = Release(plan=plan, release_id="r-owner", target=box.target)
    phases.isolate(release)
    someone_elses = box.get("deployments", "reviews-v1")
    someone_elses["metadata"] = {"name": "reviews-v2", "namespace": "default"}
    Cluster(api_client(box.kubeconfig), "default").apply_deployment(
        someone_elses, unchanged=lambda wanted, found: True
    )

    done = land_rollback(release)

    assert "reviews-v2 left alone (this release did not create it)" in done, done
    assert box.get("deployments", "reviews-v2") is not None
    assert box.get("deployments", "reviews-v1") is not None


def test_an_api_server_that_does_not_answer_is_named_at_once_and_refused(
    tmp_path, plan_data, prefect_api_url
):
    from sandbox.kube.kubeconfig import write_kubeconfig
    from sandbox.prometheus import free_port

    address = f"http://127.0.0.1:{free_port()}"  # nobody listens there
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", address)
    plan = write_plan(tmp_path / "plan.yaml", plan_data())
    env = os.environ | {"PREFECT_API_URL": prefect_api_url}
    done = subprocess.run(
        [sys.executable, "-m", "canary", "run", str(plan), "--kubeconfig", str(kubeconfig)],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
    )

    assert done.stdout.splitlines()[0] == f"connecting to {address}", done.stdout
    assert done.returncode == 2, done.stderr
    port = address.rsplit(":", 1)[1]
    expected = f"canary: refused: cannot reach the API server at 127.0.0.1:{port}: "
    assert done.stderr.strip().startswith(expected), done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
