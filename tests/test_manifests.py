"""The canary Deployment made from the plan (pure)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from canary.manifests import (
    OWNER_ANNOTATION,
    SPEC_HASH_ANNOTATION,
    ManifestError,
    canary_deployment,
    same_deployment,
    spec_hash,
)
from canary.planner import RELEASE_ANNOTATION

PORT = {"containerPort": 9080}


def stable_as_served() -> dict[str, Any]:
    """reviews-v1 as the API server returns it, status and server fields included."""
    labels = {"app": "reviews", "version": "v1"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "reviews-v1",
            "namespace": "default",
            "labels": dict(labels),
            "annotations": {"deployment.kubernetes.io/revision": "3", "team": "books"},
            "uid": "0b7f",
            "resourceVersion": "812",
            "generation": 4,
            "creationTimestamp": "2024-01-01T00:00:00Z",
            "managedFields": [{"manager": "kubectl"}],
        },
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": dict(labels)},
            "template": {
                "metadata": {"labels": dict(labels)},
                "spec": {
                    "containers": [
                        {"name": "istio-proxy", "image": "proxyv2:1.20"},
                        {"name": "reviews", "image": "reviews-v1:1.20", "ports": [PORT]},
                    ]
                },
            },
        },
        "status": {"replicas": 2, "readyReplicas": 2, "observedGeneration": 4},
    }


def test_clone_of_stable_with_the_new_image_and_version(fast_plan):
    plan = fast_plan()
    stable = stable_as_served()
    original = copy.deepcopy(stable)

    canary = canary_deployment(plan, stable, "r1")

    assert stable == original
    meta = canary["metadata"]
    assert meta["name"] == "reviews-v2" and meta["namespace"] == "default"
    for gone in ("uid", "resourceVersion", "generation", "creationTimestamp", "managedFields"):
        assert gone not in meta
    assert "status" not in canary
    assert meta["annotations"] == {
        "team": "books",
        RELEASE_ANNOTATION: "r1",
        SPEC_HASH_ANNOTATION: spec_hash(canary),
        OWNER_ANNOTATION: "default/reviews/v2",  # what rollback and cleanup may touch
    }
    assert meta["labels"] == {"app": "reviews", "version": "v2"}
    assert canary["spec"]["selector"]["matchLabels"] == {"app": "reviews", "version": "v2"}
    assert canary["spec"]["template"]["metadata"]["labels"]["version"] == "v2"
    sidecar, app = canary["spec"]["template"]["spec"]["containers"]
    assert sidecar["image"] == "proxyv2:1.20"
    assert app["image"] == plan.canary.image and app["ports"] == [PORT]
    assert canary["spec"]["replicas"] == 2


def test_without_a_container_named_like_the_service_the_first_gets_the_image(fast_plan):
    stable = stable_as_served()
    stable["spec"]["template"]["spec"]["containers"] = [{"name": "app", "image": "old"}]

    canary = canary_deployment(fast_plan(), stable, "r1")

    assert canary["spec"]["template"]["spec"]["containers"][0]["image"].endswith("v2:1.20.0")


def test_the_plans_manifest_is_used_as_given(fast_plan):
    manifest = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "reviews-next"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "reviews"}},
            "template": {
                "metadata": {"labels": {"app": "reviews", "version": "v2"}},
                "spec": {"containers": [{"name": "r", "image": "x"}]},
            },
        },
    }
    plan = fast_plan(canary={"version": "v2", "manifest": manifest})

    canary = canary_deployment(plan, None, "r1")

    assert canary["metadata"]["name"] == "reviews-next" == plan.canary_deployment
    assert canary["metadata"]["namespace"] == "default"
    assert canary["spec"] == manifest["spec"]
    assert canary["metadata"]["annotations"][RELEASE_ANNOTATION] == "r1"


def test_an_image_without_a_stable_deployment_is_an_error(fast_plan):
    with pytest.raises(ManifestError, match="reviews-v1 not found"):
        canary_deployment(fast_plan(), None, "r1")


def test_same_deployment_ignores_server_defaults_but_not_spec_or_scale(fast_plan):
    desired = canary_deployment(fast_plan(), stable_as_served(), "r1")
    served = copy.deepcopy(desired)
    served["spec"]["revisionHistoryLimit"] = 10  # a default the API server adds
    served["spec"]["progressDeadlineSeconds"] = 600
    assert same_deployment(desired, served)

    scaled_down = copy.deepcopy(served)
    scaled_down["spec"]["replicas"] = 0
    assert not same_deployment(desired, scaled_down)

    other_image = canary_deployment(
        fast_plan(canary={"version": "v2", "image": "reviews:other"}), stable_as_served(), "r2"
    )
    assert not same_deployment(other_image, served)
