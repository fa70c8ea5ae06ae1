"""Whole gateway-api releases through the release flow, on the in-memory API
(tests/support/fake_kube.py) in place of a cluster.

The in-memory API has no mesh, so these releases send no traffic and read no metrics: their
test phase runs a command (tests/test_flow_gateway_api_sandbox.py runs them on the sandbox,
whose mesh routes by the HTTPRoutes).
Everything else is the flow as it runs against a cluster, through the official client:
the lease, every phase's routing written and read back, Deployments, rollback.
"""

from __future__ import annotations

from typing import Any

import pytest

import canary.cluster
from canary.plan import plan_from_dict
from tests.support.fake_kube import FakeKube

GATEWAY_API = {"provider": "gateway-api", "port": 9080}


def bookinfo() -> FakeKube:
    """BookInfo's reviews: its Service and its v1 Deployment, ready."""
    kube = FakeKube()
    labels = {"app": "reviews", "version": "v1"}
    kube.put(
        "services",
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "reviews", "labels": {"app": "reviews"}},
            "spec": {"selector": {"app": "reviews"}, "ports": [{"name": "http", "port": 9080}]},
        },
    )
    kube.put(
        "deployments",
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "reviews-v1", "labels": labels},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "containers": [
                            {
                                "name": "reviews",
                                "image": "docker.io/istio/examples-bookinfo-reviews-v1:1.20.0",
                                "ports": [{"containerPort": 9080}],
                            }
                        ]
                    },
                },
            },
        },
    )
    return kube


def gateway_plan(plan_data: Any, *, checks_pass: bool = True, **overrides: Any) -> Any:
    """The fast BookInfo plan on the Gateway API, its test phase a command."""
    command = {"name": "answers", "run": "true" if checks_pass else "exit 1"}
    data = plan_data(routing=GATEWAY_API, tests={"commands": [command]}, **overrides)
    return plan_from_dict(data)


def release_into(monkeypatch: pytest.MonkeyPatch, kube: FakeKube) -> None:
    """Make every API client of this process (the release's target) the in-memory API."""
    client = kube.api_client()
    monkeypatch.setattr(canary.cluster, "api_client", lambda *args, **kwargs: client)
