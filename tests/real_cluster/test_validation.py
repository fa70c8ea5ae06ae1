"""Every object the planner writes, checked by the real server's validation of Istio's CRDs
(structural schema, CEL rules, strict field validation); malformed ones are refused with 422.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import uuid
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from canary.plan import load_plan
from canary.planner import Routing, rollback_routing
from tests.real_cluster.conftest import REPO

pytestmark = pytest.mark.timeout(600)

PLAN = REPO / "configs" / "bookinfo-reviews.yaml"
PLURALS = {
    "VirtualService": "virtualservices",
    "DestinationRule": "destinationrules",
    "HTTPRoute": "httproutes",
}


@cache
def plan_output(plan: Path = PLAN) -> str:
    """What `canary plan -o yaml` prints for a plan file, run once."""
    done = subprocess.run(
        [sys.executable, "-m", "canary", "plan", "-o", "yaml", str(plan)],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    )
    return done.stdout


def planned_phases() -> list[dict[str, Any]]:
    """One document per phase, fresh for each caller to change."""
    return [doc for doc in yaml.safe_load_all(plan_output()) if doc]


def planned_objects() -> list[tuple[str, dict[str, Any]]]:
    """(label, object) for every phase's VirtualService and DestinationRule, and the rollback
    state from the phase with the most routes the pipeline added."""
    objects = []
    phases = planned_phases()
    for phase in phases:
        for key in ("virtualService", "destinationRule"):
            objects.append((f"{phase['phase']} {phase[key]['kind']}", phase[key]))
    busiest = max(phases, key=lambda p: len(p["virtualService"]["spec"]["http"]))
    current = Routing(busiest["virtualService"], busiest["destinationRule"])
    rolled_back = rollback_routing(load_plan(PLAN), "dry-run", current)
    for obj in (rolled_back.virtual_service, rolled_back.destination_rule):
        objects.append((f"rollback from {busiest['phase']} {obj['kind']}", obj))
    return objects


def dry_run_create(api: Any, obj: dict[str, Any]) -> dict[str, Any]:
    """Create with dryRun=All under a fresh name: validated in full, stored never, and not
    refused as AlreadyExists when another test holds the planner's own name."""
    obj = copy.deepcopy(obj)
    obj["metadata"]["name"] = f"validate-{uuid.uuid4().hex[:8]}"
    group, version = obj["apiVersion"].split("/")
    return k8s.CustomObjectsApi(api).create_namespaced_custom_object(
        group,
        version,
        obj["metadata"]["namespace"],
        PLURALS[obj["kind"]],
        obj,
        dry_run="All",
        field_validation="Strict",
    )


def test_the_plan_has_every_phase_and_both_kinds():
    labels = [label for label, _ in planned_objects()]
    phases = {label.split(" ")[0] for label in labels if not label.startswith("rollback")}
    assert {"isolate", "deploy", "test", "header-route", "promote", "cleanup"} <= phases
    assert any(label.startswith("rollback") for label in labels)


def test_the_real_server_accepts_what_the_planner_writes(release_api: Any):
    refused, changed = [], []
    for label, obj in planned_objects():
        try:
            accepted = dry_run_create(release_api, obj)
        except ApiException as answer:
            refused.append(f"{label}: {answer.status} {answer.body}")
            continue
        # Accepted as written: nothing pruned, defaulted or rewritten on the way in.
        if accepted["spec"] != obj["spec"] or (
            accepted["metadata"].get("annotations") != obj["metadata"].get("annotations")
        ):
            changed.append(label)
    assert not refused, refused
    assert not changed, changed


def first_split_phase_vs() -> dict[str, Any]:
    phase = next(
        p for p in planned_phases() if len(p["virtualService"]["spec"]["http"][-1]["route"]) == 2
    )
    return copy.deepcopy(phase["virtualService"])


def refusal(api: Any, obj: dict[str, Any]) -> ApiException:
    with pytest.raises(ApiException) as refused:
        dry_run_create(api, obj)
    return refused.value


def test_a_weight_of_the_wrong_type_is_refused_by_the_schema(release_api: Any):
    vs = first_split_phase_vs()
    vs["spec"]["http"][-1]["route"][0]["weight"] = "eighty"
    answer = refusal(release_api, vs)
    assert answer.status == 422
    assert "spec.http[" in answer.body and "weight" in answer.body
    assert "must be of type integer" in answer.body


def test_a_timeout_below_a_millisecond_is_refused_by_a_cel_rule(release_api: Any):
    vs = first_split_phase_vs()
    vs["spec"]["http"][-1]["timeout"] = "0.5ms"
    answer = refusal(release_api, vs)
    assert answer.status == 422
    assert "must be a valid duration greater than 1ms" in answer.body


def test_an_unknown_field_is_refused_with_strict_validation(release_api: Any):
    vs = first_split_phase_vs()
    vs["spec"]["http"][-1]["route"][0]["wieght"] = 80
    answer = refusal(release_api, vs)
    # Strict field validation answers 400 BadRequest, not 422 Invalid as the schema does.
    assert answer.status == 400
    status = json.loads(answer.body)
    assert status["reason"] == "BadRequest"
    assert (
        'strict decoding error: unknown field "spec.http[0].route[0].wieght"' in status["message"]
    )
