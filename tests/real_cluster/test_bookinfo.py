"""BookInfo (without reviews v2 and v3) becomes available through the real controllers, the
real scheduler and kwok's fake Node, and the release reads it the way production does."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client as k8s

from canary.cluster import Cluster, is_ready
from tests.real_cluster.conftest import NOT_YET_RELEASED, RealCluster, deployment_available

pytestmark = pytest.mark.timeout(600)


def test_bookinfo_deployments_become_available(
    real_cluster: RealCluster, admin_api: Any, bookinfo: list[str]
):
    assert sorted(bookinfo) == ["details-v1", "productpage-v1", "ratings-v1", "reviews-v1"]
    apps = k8s.AppsV1Api(admin_api)
    names = {
        d.metadata.name
        for d in apps.list_namespaced_deployment(real_cluster.release_namespace).items
    }
    assert not names & set(NOT_YET_RELEASED)
    for name in bookinfo:  # the fixture waited for this; the state holds
        assert deployment_available(apps, real_cluster.release_namespace, name), name


def test_their_pods_run_on_the_fake_node_placed_by_the_scheduler(
    real_cluster: RealCluster, admin_api: Any, bookinfo: list[str]
):
    pods = (
        k8s.CoreV1Api(admin_api)
        .list_namespaced_pod(
            real_cluster.release_namespace,
            label_selector="app in (details,ratings,reviews,productpage)",
        )
        .items
    )
    assert sorted({pod.metadata.labels["app"] for pod in pods}) == [
        "details",
        "productpage",
        "ratings",
        "reviews",
    ]
    for pod in pods:
        assert pod.spec.node_name == real_cluster.summary["node"]
        assert pod.status.phase == "Running"
        scheduled = [c for c in pod.status.conditions if c.type == "PodScheduled"]
        assert scheduled and scheduled[0].status == "True"
        owner = pod.metadata.owner_references[0]
        assert owner.kind == "ReplicaSet"  # made by the Deployment controller, not by a test


def test_the_release_sees_reviews_v1_ready(
    real_cluster: RealCluster, release_api: Any, bookinfo: list[str]
):
    cluster = Cluster(release_api, real_cluster.release_namespace)
    reviews = cluster.get_deployment("reviews-v1")
    assert is_ready(reviews)
    assert cluster.get_deployment("reviews-v2") is None
