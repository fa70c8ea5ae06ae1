"""Cluster: Deployments over the official client against the sandbox, and retries."""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from kubernetes.client.exceptions import ApiException

from canary import cluster as cluster_module
from canary.cluster import (
    Cluster,
    ClusterConfigError,
    ReadinessTimeout,
    api_client,
    describe,
    is_ready,
    is_transient,
    retrying,
)
from canary.manifests import canary_deployment, same_deployment
from sandbox.kube.kubeconfig import write_kubeconfig
from tests.support.clock import FakeClock


def cluster_of(box: Any) -> Cluster:
    return Cluster(api_client(box.kubeconfig), "default")


def canary_manifest(box: Any, plan: Any, release_id: str = "r1") -> dict[str, Any]:
    return canary_deployment(plan, box.get("deployments", "reviews-v1"), release_id)


def test_a_canary_is_created_then_left_alone_then_replaced_when_it_differs(
    start_sandbox, fast_plan
):
    box, plan = start_sandbox(), fast_plan()
    cluster = cluster_of(box)
    manifest = canary_manifest(box, plan)

    created, wrote = cluster.apply_deployment(manifest, same_deployment)
    assert wrote and created["metadata"]["name"] == "reviews-v2"

    box.api.clear_requests()
    _, wrote = cluster.apply_deployment(copy.deepcopy(manifest), same_deployment)
    assert not wrote and box.writes() == []

    fixed = fast_plan(canary={"version": "v2", "image": "reviews:v2-fixed"})
    changed = canary_manifest(box, fixed, "r2")
    replaced, wrote = cluster.apply_deployment(changed, same_deployment)
    assert wrote
    assert replaced["spec"]["template"]["spec"]["containers"][0]["image"] == "reviews:v2-fixed"
    assert replaced["metadata"]["uid"] == created["metadata"]["uid"]


def test_wait_ready_returns_the_ready_deployment(start_sandbox, fast_plan):
    box, plan = start_sandbox(), fast_plan()
    cluster = cluster_of(box)
    cluster.apply_deployment(canary_manifest(box, plan), same_deployment)

    ready = cluster.wait_ready("reviews-v2", time.monotonic() + 5)

    assert is_ready(ready)


def test_wait_ready_gives_up_at_the_deadline(start_sandbox, fast_plan):
    box, plan = start_sandbox("unready"), fast_plan()
    cluster = cluster_of(box)
    cluster.apply_deployment(canary_manifest(box, plan), same_deployment)
    began = time.monotonic()

    with pytest.raises(ReadinessTimeout, match=r"reviews-v2 not ready .*0/1 replicas ready"):
        cluster.wait_ready("reviews-v2", began + 1.0)

    assert time.monotonic() >= began + 1.0  # it waited for the deadline, not less


def test_scale_and_delete_write_only_when_needed(start_sandbox):
    box = start_sandbox()
    cluster = cluster_of(box)

    assert cluster.scale_deployment("reviews-v1", 0)["spec"]["replicas"] == 0
    box.api.clear_requests()
    cluster.scale_deployment("reviews-v1", 0)
    assert box.writes() == []

    assert cluster.delete_deployment("reviews-v1") is True
    box.api.clear_requests()
    assert cluster.delete_deployment("reviews-v1") is False
    assert box.writes() == []
    assert cluster.get_deployment("reviews-v1") is None


def test_readiness_needs_every_replica_and_the_current_generation():
    ready = {
        "metadata": {"generation": 2},
        "spec": {"replicas": 2},
        "status": {"readyReplicas": 2, "observedGeneration": 2},
    }
    assert is_ready(ready)
    assert not is_ready(ready | {"status": {"readyReplicas": 1, "observedGeneration": 2}})
    assert not is_ready(ready | {"status": {"readyReplicas": 2, "observedGeneration": 1}})
    assert not is_ready(ready | {"spec": {"replicas": 0}})
    assert not is_ready(None)


# --- retries ----------------------------------------------------------------------------


class FlakyFront:
    """A real HTTP front for the API server that answers 503 to its first `failures` calls."""

    def __init__(self, upstream: str, failures: int):
        self.upstream, self.failures, self.seen = upstream, failures, 0
        front = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                front.seen += 1
                if front.seen <= front.failures:
                    self._reply(503, b'{"kind":"Status","message":"etcd is busy","code":503}')
                    return
                answer = httpx.get(front.upstream + self.path)
                self._reply(answer.status_code, answer.content)

            def _reply(self, code: int, body: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def flaky_front(start_sandbox) -> Iterator[FlakyFront]:
    front = FlakyFront(start_sandbox().sandbox.api_url, failures=2)
    yield front
    front.server.shutdown()
    front.server.server_close()


def test_server_errors_are_retried_until_the_api_answers(flaky_front, tmp_path):
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", flaky_front.url)
    cluster = Cluster(api_client(str(kubeconfig)), "default")

    stable = cluster.get_deployment("reviews-v1")

    assert stable is not None and flaky_front.seen == 3


def test_an_unreachable_api_is_retried_until_the_timeout(tmp_path, caplog):
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", "http://127.0.0.1:9")
    cluster = Cluster(api_client(str(kubeconfig)), "default", retry_timeout=1.0)
    began = time.monotonic()

    with caplog.at_level("WARNING"), pytest.raises(Exception) as raised:
        cluster.get_deployment("reviews-v1")

    assert is_transient(raised.value)
    assert time.monotonic() - began >= 0.5  # it kept trying for about its timeout
    # One line a user can act on, and no warning per attempt from urllib3's own retries.
    said = describe(raised.value)
    assert said == "cannot reach the API server at 127.0.0.1:9: connection refused", said
    assert not [r for r in caplog.records if r.name.startswith("urllib3")], caplog.text


def failing(times: int, status: int) -> Any:
    calls = []

    def operation() -> str:
        calls.append(1)
        if len(calls) <= times:
            raise ApiException(status=status, reason="test")
        return "done"

    operation.calls = calls  # type: ignore[attr-defined]
    return operation


@pytest.mark.parametrize("status", [409, 429, 500, 503, 504])
def test_transient_errors_and_conflicts_are_retried(status):
    operation = failing(2, status)
    assert retrying(operation, first_delay=0.01) == "done"
    assert len(operation.calls) == 3


@pytest.mark.parametrize("status", [400, 403, 404, 422])
def test_other_errors_are_not_retried(status):
    operation = failing(1, status)
    with pytest.raises(ApiException):
        retrying(operation, first_delay=0.01)
    assert len(operation.calls) == 1


def test_conflicts_on_create_are_not_retried():
    operation = failing(1, 409)
    with pytest.raises(ApiException):
        retrying(operation, first_delay=0.01, retry_conflicts=False)
    assert len(operation.calls) == 1


def test_retries_stop_at_the_timeout(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(cluster_module, "time", clock)
    operation = failing(1000, 503)
    with pytest.raises(ApiException):
        retrying(operation, timeout=0.5, first_delay=0.05, max_delay=0.1)
    # Waits of 0.05, 0.1, 0.1, 0.1, 0.1: the next would pass the deadline, so it gives up.
    assert clock.slept == pytest.approx([0.05, 0.1, 0.1, 0.1, 0.1])
    assert len(operation.calls) == 6


# --- configuration -------------------------------------------------------------------------


def test_a_missing_kubeconfig_is_named(tmp_path: Path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ClusterConfigError, match=str(missing)):
        api_client(str(missing))


def test_a_kubeconfig_that_is_not_one_is_named(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("just: [a, list]\n")
    with pytest.raises(ClusterConfigError, match=str(bad)):
        api_client(str(bad))
