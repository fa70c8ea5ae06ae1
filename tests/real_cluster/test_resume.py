"""`canary run` killed with -9 in a weighted step, then run again, on the real server: the
second run adopts the release from the lease and checkpoint on the VirtualService, resumes at
that step with the same canary, and every routing version the server stored across both
runs is one of the planner's states, the canary's weight never going down."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s

from canary.lease import LEASE, LEASE_HOLDER, OUTCOME, annotations_of
from canary.plan import plan_from_dict
from canary.planner import PHASE_ANNOTATION, RELEASE_ANNOTATION, canary_weight, phases
from tests.real_cluster.conftest import (
    CANARY,
    REPO,
    REVIEWS_STABLE,
    RealCluster,
    deployment_available,
    gone,
    real_plan_data,
)
from tests.real_cluster.routes import (
    ISTIO,
    ObjectHistory,
    phases_seen,
    planned_states,
    route_objects,
    unplanned,
    unplanned_destination_rules,
)
from tests.support.waiting import wait_until

pytestmark = pytest.mark.timeout(600)

PLAN_FILE = REPO / "configs" / "bookinfo-reviews.yaml"
STEP_HOLD = "8s"  # long enough to kill the run in the middle of step-1
STEPS = [{"weight": 20, "hold": STEP_HOLD}, {"weight": 50, "hold": "1s"}]
LEASE_TTL = "3"  # the second run waits this long for the dead run's lease
RUN_TIMEOUT = 240  # each of: the first run reaching step-1, the second run


def canary_run(plan_path: Path, real_cluster: RealCluster, mesh_url: str) -> list[str]:
    return [
        sys.executable, "-m", "canary", "run", str(plan_path),
        "--kubeconfig", str(real_cluster.release_kubeconfig), "--mesh-url", mesh_url,
    ]  # fmt: skip


@pytest.fixture
def run_env(prefect_api_url: str, tmp_path: Path) -> dict[str, str]:
    home = tmp_path / "prefect-home"
    home.mkdir()
    return os.environ | {
        "PREFECT_API_URL": prefect_api_url,
        "PREFECT_HOME": str(home),
        "CANARY_LEASE_TTL": LEASE_TTL,
    }


def test_a_killed_run_resumes_at_its_step_on_the_real_server(
    real_cluster: RealCluster,
    admin_api: Any,
    fresh_reviews: str,
    mesh_on_cluster: Any,
    run_env: dict[str, str],
    tmp_path: Path,
):
    running = mesh_on_cluster("healthy", with_prometheus=False)
    data = real_plan_data(PLAN_FILE, steps=STEPS, analysis={"interval": 1, "threshold": 1})
    plan, plan_path = plan_from_dict(data), tmp_path / "plan.yaml"
    plan_path.write_text(yaml.safe_dump(data, sort_keys=False))
    command = canary_run(plan_path, real_cluster, running.mesh.ingress_url)
    custom, apps = k8s.CustomObjectsApi(admin_api), k8s.AppsV1Api(admin_api)

    def stored_notes() -> dict[str, str]:
        return annotations_of(
            custom.get_namespaced_custom_object(
                *ISTIO, fresh_reviews, "virtualservices", plan.virtual_service
            )
        )

    with (
        ObjectHistory(admin_api, fresh_reviews, *ISTIO, "virtualservices") as vs_history,
        ObjectHistory(admin_api, fresh_reviews, *ISTIO, "destinationrules") as dr_history,
    ):
        first = subprocess.Popen(
            command, env=run_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        try:
            at_step_1 = wait_until(
                lambda: next(
                    (o for o in vs_history.versions(plan.virtual_service)
                     if annotations_of(o).get(PHASE_ANNOTATION) == "step-1"),
                    None,
                ),
                RUN_TIMEOUT,
                interval=0.02,
                message="the first run to reach step-1",
            )  # fmt: skip
        finally:
            first.kill()  # as a node dying under the worker: no rollback, no lease given back
            first.wait(10)
        notes = annotations_of(at_step_1)
        release_id = notes[RELEASE_ANNOTATION]
        assert stored_notes()[LEASE_HOLDER] == release_id  # the dead run still holds it
        assert stored_notes()[PHASE_ANNOTATION] == "step-1"  # killed within the step's hold
        canary_uid = apps.read_namespaced_deployment(CANARY, fresh_reviews).metadata.uid

        second = subprocess.run(
            command, env=run_env, capture_output=True, text=True, timeout=RUN_TIMEOUT
        )
        output = second.stdout + second.stderr
        assert second.returncode == 0, output
        stored_vs = vs_history.caught_up(plan.virtual_service)
        stored_dr = dr_history.caught_up(plan.destination_rule)

    assert f"release   {release_id}" in output  # the same release, adopted from the cluster
    assert "outcome   promoted" in output
    ran = [line.split()[0] for line in output.splitlines() if line.startswith("  ")]
    assert ran == ["step-1", "step-2", "promote", "cleanup"], output
    # The first run's canary carried on: the second run did not make another.
    assert apps.read_namespaced_deployment(CANARY, fresh_reviews).metadata.uid == canary_uid
    assert deployment_available(apps, fresh_reviews, CANARY)
    assert gone(lambda: apps.read_namespaced_deployment(REVIEWS_STABLE, fresh_reviews))

    # Never a mix the planner does not make, across the kill and the resume.
    states = planned_states(plan, release_id)
    assert phases_seen(stored_vs) == [phase.name for phase in phases(plan)]
    assert unplanned(stored_vs, route_objects(plan, states), release_id) == []
    assert unplanned_destination_rules(stored_dr, states, release_id) == []
    weights = [canary_weight(plan, vs) for vs in stored_vs]
    assert weights == sorted(weights), f"weight went down: {weights}"
    assert weights[-1] == 100
    notes = stored_notes()
    assert LEASE not in notes and LEASE_HOLDER not in notes  # given back at the end
    assert notes[OUTCOME] == "promoted"
    running.wait_until_all_on(CANARY)
