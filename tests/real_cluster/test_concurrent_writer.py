"""Another writer changes the VirtualService between the router's read and its write: the
real server answers 409 Conflict, and the router reads again and ends holding its state."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from canary.plan import load_plan
from canary.planner import phase_named, routing_for, same_routing
from canary.routing.istio import IstioRouter
from tests.real_cluster.conftest import REPO, RealCluster

pytestmark = pytest.mark.timeout(600)

PLAN = REPO / "configs" / "bookinfo-reviews.yaml"
RELEASE_ID = "concurrent-writer"


class InterposedClient(k8s.ApiClient):
    """The release's API client, with another writer run just before its first
    VirtualService replace goes out, and the status of every such replace recorded."""

    def __init__(self, configuration: k8s.Configuration, other_writer: Any) -> None:
        super().__init__(configuration)
        self.other_writer = other_writer
        self.statuses: list[int] = []
        self._interfered = threading.Event()

    def call_api(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        replacing_vs = method == "PUT" and "/virtualservices/" in url
        if replacing_vs and not self._interfered.is_set():
            self._interfered.set()
            self.other_writer()
        answer = super().call_api(method, url, *args, **kwargs)
        if replacing_vs:
            self.statuses.append(answer.status)
        return answer


def release_configuration(real_cluster: RealCluster) -> k8s.Configuration:
    configuration = k8s.Configuration()
    k8s_config.load_kube_config(
        str(real_cluster.release_kubeconfig), client_configuration=configuration
    )
    return configuration


def test_a_conflicting_write_is_read_again_and_the_planned_state_wins(
    real_cluster: RealCluster, admin_api: Any, release_api: Any
):
    plan = load_plan(PLAN)
    namespace = plan.namespace
    custom = k8s.CustomObjectsApi(admin_api)
    # The release starts from the isolate phase, written by the router itself.
    setup = IstioRouter(release_api, namespace, plan.service, plan.service)
    setup.set_routes(routing_for(plan, phase_named(plan, "isolate"), RELEASE_ID))
    before = setup.get_routes()
    assert before is not None
    target = routing_for(plan, phase_named(plan, "header-route"), RELEASE_ID, before)

    def other_writer() -> None:
        # Someone else's route, added after the router read the VirtualService.
        custom.patch_namespaced_custom_object(
            "networking.istio.io",
            "v1",
            namespace,
            "virtualservices",
            plan.service,
            {
                "spec": {
                    "http": [
                        {
                            "name": "someone-else",
                            "route": [{"destination": {"host": plan.service, "subset": "v1"}}],
                        }
                    ]
                }
            },
        )

    api = InterposedClient(release_configuration(real_cluster), other_writer)
    IstioRouter(api, namespace, plan.service, plan.service).set_routes(target)

    assert api.statuses[0] == 409, api.statuses  # the real server refused the stale write
    assert api.statuses[-1] == 200, api.statuses  # and took the one made after reading again
    held = custom.get_namespaced_custom_object(
        "networking.istio.io", "v1", namespace, "virtualservices", plan.service
    )
    assert same_routing(target.virtual_service, held)
    assert "someone-else" not in [route.get("name") for route in held["spec"]["http"]]
