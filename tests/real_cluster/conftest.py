"""The real-cluster lane: one real control plane (scripts/real-cluster.sh) for its tests.

The binaries are built by scripts/bootstrap.sh (cached in ~/.cache/canary-real-cluster).
Where they are missing the lane is skipped, except in CI (CI=true), where that fails.
All lane tests run on one xdist worker, one after another (tests/conftest.py), so there
is one cluster, up for this package's tests only (package-scoped fixtures).
"""

from __future__ import annotations

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
