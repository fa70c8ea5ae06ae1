"""The real-cluster lane: one real control plane (scripts/real-cluster.sh) for its tests.

The binaries are built by scripts/bootstrap.sh (cached in ~/.cache/canary-real-cluster).
Where they are missing the lane is skipped, except in CI (CI=true), where that fails.
All lane tests run on one xdist worker, one after another (tests/conftest.py), so there
is one cluster, up for this package's tests only (package-scoped fixtures).
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.waiting import wait_until

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "real-cluster.sh"
REFERENCE = REPO.parent / "shared" / "reference"
CRD_FILES = (
    REFERENCE / "istio" / "networking-crds.yaml",
    REFERENCE / "gateway-api" / "httproute-crd.yaml",
)
BOOKINFO = REFERENCE / "istio" / "bookinfo" / "bookinfo.yaml"
NOT_YET_RELEASED = ("reviews-v2", "reviews-v3")  # the release brings the canary itself
UP_TIMEOUT = 600  # seconds; `up` itself waits on each component with its own deadline

sys.path.insert(0, str(REPO / "scripts"))
from real_cluster import build  # noqa: E402


@dataclass(frozen=True)
class RealCluster:
    directory: Path
    summary: dict[str, Any]  # DIR/cluster.json

    @property
    def admin_kubeconfig(self) -> Path:
        return self.directory / "admin.kubeconfig"

    @property
    def release_kubeconfig(self) -> Path:
        return self.directory / "release.kubeconfig"

    @property
    def release_namespace(self) -> str:
        return self.summary["release"]["release_namespaces"][0]

    @property
    def service_account(self) -> str:
        release = self.summary["release"]
        return f"system:serviceaccount:{release['namespace']}:{release['service_account']}"


def real_cluster_script(
    *args: str, env: dict[str, str] | None = None, timeout: float = UP_TIMEOUT
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT), *args],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="package")
def real_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealCluster]:
    """etcd, kube-apiserver (Node,RBAC), controller-manager, scheduler and kwok, with
    Istio's and the Gateway API's CRDs and the release's ServiceAccount, Role and RoleBinding.
    """
    if absent := build.missing():
        message = (
            f"the real cluster's binaries are not built ({', '.join(absent)}): run "
            "scripts/real-cluster.sh build (or scripts/bootstrap.sh)"
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    directory = tmp_path_factory.mktemp("real-cluster")
    started = real_cluster_script(
        "up", str(directory), env={"CRDS": " ".join(str(path) for path in CRD_FILES)}
    )
    if started.returncode != 0:
        real_cluster_script("down", str(directory))
        pytest.fail(started.stderr.strip() or f"up exited {started.returncode}")
    summary = json.loads((directory / "cluster.json").read_text())
    try:
        yield RealCluster(directory, summary)
    finally:
        stopped = real_cluster_script("down", str(directory), timeout=120)
        assert stopped.returncode == 0, stopped.stderr


@pytest.fixture(scope="package")
def admin_api(real_cluster: RealCluster) -> Any:
    from canary.cluster import api_client

    return api_client(str(real_cluster.admin_kubeconfig))


@pytest.fixture(scope="package")
def release_api(real_cluster: RealCluster) -> Any:
    """The client a release gets in production: the canary-release ServiceAccount's token."""
    from canary.cluster import api_client

    return api_client(str(real_cluster.release_kubeconfig))


def bookinfo_documents() -> list[dict[str, Any]]:
    return [
        doc
        for doc in yaml.safe_load_all(BOOKINFO.read_text())
        if doc and not (doc["kind"] == "Deployment" and doc["metadata"]["name"] in NOT_YET_RELEASED)
    ]


def deployment_available(apps: Any, namespace: str, name: str) -> bool:
    status = apps.read_namespaced_deployment_status(name, namespace).status
    available = any(c.type == "Available" and c.status == "True" for c in status.conditions or [])
    return available and (status.ready_replicas or 0) >= 1


@pytest.fixture(scope="package")
def bookinfo(real_cluster: RealCluster, admin_api: Any) -> list[str]:
    """BookInfo without reviews v2 and v3, applied as the admin; its Deployments' names,
    once every one is Available (real controllers, real scheduler, kwok's fake Node)."""
    from kubernetes import client as k8s
    from kubernetes import utils

    documents = bookinfo_documents()
    for document in documents:
        utils.create_from_dict(admin_api, document, namespace=real_cluster.release_namespace)
    apps = k8s.AppsV1Api(admin_api)
    names = [d["metadata"]["name"] for d in documents if d["kind"] == "Deployment"]
    for name in names:
        wait_until(
            lambda name=name: deployment_available(apps, real_cluster.release_namespace, name),
            timeout=180,
            interval=0.5,
            message=f"Deployment {name} Available",
        )
    return names


# --- releases on the real server -------------------------------------------------------

REVIEWS_STABLE = "reviews-v1"
RELEASE_LEFTOVERS = {  # what a release (or a test before) may have left for the next one
    ("networking.istio.io", "v1", "virtualservices"): ("reviews",),
    ("networking.istio.io", "v1", "destinationrules"): ("reviews",),
    ("gateway.networking.k8s.io", "v1", "httproutes"): ("reviews",),
}
VERSION_SERVICES = ("reviews-v1", "reviews-v2")  # the Gateway API release's backends
CANARY = "reviews-v2"
GONE_TIMEOUT = 120  # seconds; a foreground deletion waits for the ReplicaSets and Pods


def gone(read: Any) -> bool:
    from kubernetes.client.exceptions import ApiException

    try:
        read()
    except ApiException as answer:
        if answer.status == 404:
            return True
        raise
    return False


def _delete_quietly(delete: Any) -> None:
    from kubernetes.client.exceptions import ApiException

    try:
        delete()
    except ApiException as answer:
        if answer.status != 404:
            raise


@pytest.fixture
def fresh_reviews(real_cluster: RealCluster, admin_api: Any, bookinfo: list[str]) -> str:
    """BookInfo as before any release of reviews: no routing objects, no canary, and
    reviews-v1 Available (created again when a release before deleted it). The namespace."""
    from kubernetes import client as k8s
    from kubernetes import utils

    namespace = real_cluster.release_namespace
    custom, apps, core = (
        k8s.CustomObjectsApi(admin_api),
        k8s.AppsV1Api(admin_api),
        k8s.CoreV1Api(admin_api),
    )
    for (group, version, plural), names in RELEASE_LEFTOVERS.items():
        for name in names:
            _delete_quietly(
                functools.partial(
                    custom.delete_namespaced_custom_object, group, version, namespace, plural, name
                )
            )
    for name in VERSION_SERVICES:
        _delete_quietly(lambda name=name: core.delete_namespaced_service(name, namespace))
    _delete_quietly(
        lambda: apps.delete_namespaced_deployment(
            CANARY, namespace, propagation_policy="Foreground"
        )
    )
    wait_until(
        lambda: gone(lambda: apps.read_namespaced_deployment(CANARY, namespace)),
        GONE_TIMEOUT,
        interval=0.2,
        message=f"Deployment {CANARY} deleted",
    )
    if gone(lambda: apps.read_namespaced_deployment(REVIEWS_STABLE, namespace)):
        stable = next(
            d
            for d in bookinfo_documents()
            if d["kind"] == "Deployment" and d["metadata"]["name"] == REVIEWS_STABLE
        )
        utils.create_from_dict(admin_api, stable, namespace=namespace)
    wait_until(
        lambda: deployment_available(apps, namespace, REVIEWS_STABLE),
        180,
        interval=0.2,
        message=f"Deployment {REVIEWS_STABLE} Available",
    )
    return namespace


@dataclass
class MeshWithMetrics:
    """The sandbox's mesh routing by the real server, and a real Prometheus scraping it."""

    mesh: Any  # sandbox.mesh_on_cluster.MeshOnCluster
    prometheus: Any  # sandbox.prometheus.PrometheusServer

    def wait_until_all_on(self, workload: str, service: str = "reviews") -> None:
        """Until the mesh's traffic to ``service``, over the last two seconds, all went to
        ``workload``: the mesh follows what the server holds."""
        wait_until(
            lambda: set(self.mesh.simulator.split(2.0, service)) == {workload},
            60,
            interval=0.2,
            message=f"the mesh to send all of {service} to {workload}",
        )

    def analysis(self) -> dict[str, Any]:
        """A plan's analysis with the metrics judged from this Prometheus, at test speed."""
        return {
            "interval": 2,
            "threshold": 2,
            "noData": {"minRequests": 5},
            "prometheus": {"url": self.prometheus.url, "timeout": 2, "retries": 1},
            "metrics": [
                # A 5 s window holds several 1 s scrapes: rate() needs two.
                {"name": "request-success-rate", "thresholdRange": {"min": 99}, "interval": "5s"},
                {"name": "request-duration", "thresholdRange": {"max": 200}, "interval": "5s"},
            ],
        }


@pytest.fixture
def mesh_on_cluster(real_cluster: RealCluster) -> Iterator[Any]:
    """Start the mesh (a scenario by name) against the real server, with Prometheus."""
    from sandbox.mesh_on_cluster import MeshOnCluster
    from sandbox.prometheus import PrometheusServer
    from tests.support.prometheus import require_prometheus

    binary = require_prometheus()
    started: list[MeshWithMetrics] = []

    def start(scenario: str = "healthy", *, with_prometheus: bool = True) -> MeshWithMetrics:
        # 200 requests a second: a 5 s window at 20 % holds ~200 canary requests, enough
        # that a faulty canary's errors always show and a healthy one's never do.
        mesh = MeshOnCluster(
            real_cluster.admin_kubeconfig,
            namespace=real_cluster.release_namespace,
            scenario=scenario,
            rps=200,
            seed=7,
        ).start()
        prometheus = PrometheusServer([mesh.metrics_url], binary=binary)
        started.append(MeshWithMetrics(mesh, prometheus))
        if with_prometheus:
            prometheus.start()  # returns after a first successful scrape
        return started[-1]

    yield start
    for running in started:
        running.prometheus.stop()  # nothing to stop when it was not started
        running.mesh.stop()


def real_plan_data(plan_file: Path, **overrides: Any) -> dict[str, Any]:
    """A plan file's data at test speed, with room for the real controllers and kwok to
    make the canary ready (a few seconds on a busy machine)."""
    from tests.conftest import fast_plan_data_from

    return fast_plan_data_from(plan_file, **({"timeouts": {"readiness": 120}} | overrides))


GATEWAY_API_ROLE = "canary-release-gateway-api"
HTTPROUTE_CRD = "httproutes.gateway.networking.k8s.io"
RELEASE_RBAC = REPO / "deploy" / "kubernetes" / "release-rbac.yaml"


@pytest.fixture(scope="package")
def gateway_api_rights(real_cluster: RealCluster, admin_api: Any) -> dict[str, Any]:
    """The HTTPRoute CRD (from ../shared/reference, installed with the cluster) Established,
    and the Role canary-release-gateway-api with its RoleBinding from release-rbac.yaml
    in place as the file has them (created here when missing). The Role, as the server
    holds it."""
    from kubernetes import client as k8s
    from kubernetes import utils
    from kubernetes.client.exceptions import ApiException

    crd = k8s.ApiextensionsV1Api(admin_api).read_custom_resource_definition(HTTPROUTE_CRD)
    assert any(c.type == "Established" and c.status == "True" for c in crd.status.conditions)
    documents = [
        doc
        for doc in yaml.safe_load_all(RELEASE_RBAC.read_text())
        if doc
        and doc["kind"] in ("Role", "RoleBinding")
        and doc["metadata"]["name"] == GATEWAY_API_ROLE
    ]
    assert sorted(doc["kind"] for doc in documents) == ["Role", "RoleBinding"]
    for document in documents:
        try:
            utils.create_from_dict(admin_api, document)
        except utils.FailToCreateError as failed:
            if any(
                not (isinstance(e, ApiException) and e.status == 409) for e in failed.api_exceptions
            ):
                raise
    rbac = k8s.RbacAuthorizationV1Api(admin_api)
    role = next(doc for doc in documents if doc["kind"] == "Role")
    held = admin_api.sanitize_for_serialization(
        rbac.read_namespaced_role(GATEWAY_API_ROLE, role["metadata"]["namespace"])
    )
    assert held["rules"] == role["rules"]  # exactly the file's rights, no more
    return held
