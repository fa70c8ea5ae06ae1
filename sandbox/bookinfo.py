"""The BookInfo application as the seed deploys it, built as API objects.

Four Services (``details``, ``ratings``, ``reviews``, ``productpage``, port 9080, selecting
``app=<name>``), a ServiceAccount per service, and one Deployment per service at version
v1 only (``reviews-v2``/``reviews-v3`` are what a canary brings later). No VirtualService
or DestinationRule exists at first: Istio routes by Service alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

SERVICES = ("details", "ratings", "reviews", "productpage")
PORT = 9080
IMAGE_TAG = "1.20.0"

Obj = dict[str, Any]


def image(app: str, version: str = "v1") -> str:
    return f"docker.io/istio/examples-bookinfo-{app}-{version}:{IMAGE_TAG}"


def service(app: str, namespace: str) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": app, "namespace": namespace, "labels": {"app": app, "service": app}},
        "spec": {"ports": [{"port": PORT, "name": "http"}], "selector": {"app": app}},
    }


def service_account(app: str, namespace: str) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": f"bookinfo-{app}", "namespace": namespace, "labels": {"account": app}},
    }


def deployment(app: str, namespace: str, version: str = "v1", replicas: int = 1) -> Obj:
    labels = {"app": app, "version": version}
    container: Obj = {
        "name": app,
        "image": image(app, version),
        "imagePullPolicy": "IfNotPresent",
        "ports": [{"containerPort": PORT}],
    }
    pod_spec: Obj = {"serviceAccountName": f"bookinfo-{app}", "containers": [container]}
    template_meta: Obj = {"labels": dict(labels)}
    if app == "reviews":
        # The Java reviews service writes its logs and server state to scratch volumes.
        container["env"] = [{"name": "LOG_DIR", "value": "/tmp/logs"}]
        container["volumeMounts"] = [
            {"name": "tmp", "mountPath": "/tmp"},
            {"name": "wlp-output", "mountPath": "/opt/ibm/wlp/output"},
        ]
        pod_spec["volumes"] = [
            {"name": "wlp-output", "emptyDir": {}},
            {"name": "tmp", "emptyDir": {}},
        ]
    elif app == "productpage":
        template_meta["annotations"] = {
            "prometheus.io/scrape": "true",
            "prometheus.io/port": str(PORT),
            "prometheus.io/path": "/metrics",
        }
        container["volumeMounts"] = [{"name": "tmp", "mountPath": "/tmp"}]
        pod_spec["volumes"] = [{"name": "tmp", "emptyDir": {}}]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": f"{app}-{version}", "namespace": namespace, "labels": dict(labels)},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": dict(labels)},
            "template": {"metadata": template_meta, "spec": pod_spec},
        },
    }


def objects(namespace: str = "default", extra: Sequence[str] = ()) -> list[tuple[str, Obj]]:
    """``(resource plural, object)`` pairs in the order to create them; ``extra`` names
    more services built like BookInfo's (a Service, an account, a v1 Deployment)."""
    out: list[tuple[str, Obj]] = []
    for app in (*SERVICES, *extra):
        out.append(("services", service(app, namespace)))
        out.append(("serviceaccounts", service_account(app, namespace)))
        out.append(("deployments", deployment(app, namespace)))
    return out
