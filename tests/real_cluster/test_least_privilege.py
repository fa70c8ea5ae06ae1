"""The release's rights, as the real RBAC authorizer decides them for release.kubeconfig.

The Role in deploy/kubernetes/release-rbac.yaml is applied unchanged by `up`; each call here
is a real request with the ServiceAccount's token, refused or allowed by kube-apiserver.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from canary.cluster import Cluster
from canary.manifests import same_deployment
from tests.real_cluster.conftest import REPO, RealCluster

pytestmark = pytest.mark.timeout(600)

ISTIO = ("networking.istio.io", "v1")
ROLE_FILE = REPO / "deploy" / "kubernetes" / "release-rbac.yaml"


def status_of(call: Callable[[], Any]) -> int:
    """The HTTP status the server answers ``call`` with (200-class as 200)."""
    try:
        call()
    except ApiException as answer:
        return answer.status
    return 200


def virtual_service(name: str, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"hosts": [name], "http": [{"route": [{"destination": {"host": name}}]}]},
    }


def destination_rule(name: str, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "DestinationRule",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"host": name, "subsets": [{"name": "v1", "labels": {"version": "v1"}}]},
    }


def deployment(name: str, namespace: str) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "app", "image": "app:1"}]},
            },
        },
    }


def granted_verbs() -> dict[tuple[str, str], set[str]]:
    """(group, resource) -> the verbs the file's Roles grant, all Roles together: the
    cluster binds each of them to the release's ServiceAccount."""
    granted: dict[tuple[str, str], set[str]] = {}
    for role in yaml.safe_load_all(ROLE_FILE.read_text()):
        if role["kind"] != "Role":
            continue
        for rule in role["rules"]:
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    granted.setdefault((group, resource), set()).update(rule["verbs"])
    return granted


VERBS = ("get", "list", "watch", "create", "update", "patch", "delete", "deletecollection")


def may(release_api: Any, namespace: str, group: str, resource: str, verb: str) -> bool:
    """The real authorizer's answer for the release's own token (SelfSubjectAccessReview)."""
    review = k8s.AuthorizationV1Api(release_api).create_self_subject_access_review(
        {
            "spec": {
                "resourceAttributes": {
                    "namespace": namespace,
                    "group": group,
                    "resource": resource,
                    "verb": verb,
                }
            }
        }
    )
    return review.status.allowed


def test_the_authorizer_grants_the_roles_verbs_and_no_other(
    real_cluster: RealCluster, release_api: Any
):
    namespace = real_cluster.release_namespace
    wrong = []
    for (group, resource), verbs in granted_verbs().items():
        for verb in VERBS:
            allowed = may(release_api, namespace, group, resource, verb)
            if allowed != (verb in verbs):
                wrong.append(f"{verb} {group}/{resource}: allowed={allowed}")
    assert not wrong, wrong


def test_the_release_may_get_create_and_update_routing(real_cluster: RealCluster, release_api: Any):
    namespace = real_cluster.release_namespace
    custom = k8s.CustomObjectsApi(release_api)
    for plural, make in (
        ("virtualservices", virtual_service),
        ("destinationrules", destination_rule),
    ):
        name = f"lp-{uuid.uuid4().hex[:6]}"
        created = custom.create_namespaced_custom_object(
            *ISTIO, namespace, plural, make(name, namespace)
        )
        read = custom.get_namespaced_custom_object(*ISTIO, namespace, plural, name)
        assert read["metadata"]["uid"] == created["metadata"]["uid"]
        read["metadata"].setdefault("labels", {})["changed"] = "yes"
        replaced = custom.replace_namespaced_custom_object(*ISTIO, namespace, plural, name, read)
        assert replaced["metadata"]["labels"]["changed"] == "yes"
        assert int(replaced["metadata"]["resourceVersion"]) > int(
            created["metadata"]["resourceVersion"]
        )


def test_the_release_may_get_create_update_and_delete_deployments(
    real_cluster: RealCluster, release_api: Any
):
    # Through the release's own Deployment calls, which read again on a 409: the real
    # Deployment controller writes the object right after it is created.
    cluster = Cluster(release_api, real_cluster.release_namespace)
    name = f"lp-{uuid.uuid4().hex[:6]}"
    cluster.apply_deployment(deployment(name, real_cluster.release_namespace), same_deployment)
    assert cluster.get_deployment(name)["metadata"]["name"] == name
    assert cluster.scale_deployment(name, 0)["spec"]["replicas"] == 0
    assert cluster.delete_deployment(name) is True


def test_reading_secrets_is_forbidden(real_cluster: RealCluster, release_api: Any, admin_api: Any):
    namespace = real_cluster.release_namespace
    name = f"lp-{uuid.uuid4().hex[:6]}"
    k8s.CoreV1Api(admin_api).create_namespaced_secret(
        namespace, {"metadata": {"name": name}, "stringData": {"token": "not-for-releases"}}
    )
    core = k8s.CoreV1Api(release_api)
    assert status_of(lambda: core.read_namespaced_secret(name, namespace)) == 403
    assert status_of(lambda: core.list_namespaced_secret(namespace)) == 403


def test_deleting_a_virtual_service_is_forbidden(
    real_cluster: RealCluster, release_api: Any, admin_api: Any
):
    namespace = real_cluster.release_namespace
    name = f"lp-{uuid.uuid4().hex[:6]}"
    k8s.CustomObjectsApi(admin_api).create_namespaced_custom_object(
        *ISTIO, namespace, "virtualservices", virtual_service(name, namespace)
    )
    custom = k8s.CustomObjectsApi(release_api)
    try:
        custom.delete_namespaced_custom_object(*ISTIO, namespace, "virtualservices", name)
    except ApiException as refused:
        assert refused.status == 403
        status = json.loads(refused.body)
        assert status["reason"] == "Forbidden"
        assert (
            f'User "{real_cluster.service_account}" cannot delete resource "virtualservices"'
            in (status["message"])
        )
    else:
        pytest.fail("the release deleted a VirtualService")
    still_there = custom.get_namespaced_custom_object(*ISTIO, namespace, "virtualservices", name)
    assert still_there["metadata"]["name"] == name


@pytest.mark.parametrize(
    "what",
    [
        "read a Deployment",
        "create a Deployment",
        "read a VirtualService",
        "create a VirtualService",
    ],
)
def test_another_namespace_is_forbidden(
    real_cluster: RealCluster, release_api: Any, admin_api: Any, what: str
):
    elsewhere = "lp-elsewhere"
    core = k8s.CoreV1Api(admin_api)
    if status_of(lambda: core.read_namespace(elsewhere)) == 404:
        core.create_namespace({"metadata": {"name": elsewhere}})
    apps = k8s.AppsV1Api(release_api)
    custom = k8s.CustomObjectsApi(release_api)
    calls = {
        "read a Deployment": lambda: apps.read_namespaced_deployment("reviews-v1", elsewhere),
        "create a Deployment": lambda: apps.create_namespaced_deployment(
            elsewhere, deployment("lp-app", elsewhere)
        ),
        "read a VirtualService": lambda: custom.get_namespaced_custom_object(
            *ISTIO, elsewhere, "virtualservices", "reviews"
        ),
        "create a VirtualService": lambda: custom.create_namespaced_custom_object(
            *ISTIO, elsewhere, "virtualservices", virtual_service("reviews", elsewhere)
        ),
    }
    assert status_of(calls[what]) == 403


def test_pods_are_not_the_releases_to_read(real_cluster: RealCluster, release_api: Any):
    core = k8s.CoreV1Api(release_api)
    assert status_of(lambda: core.list_namespaced_pod(real_cluster.release_namespace)) == 403
