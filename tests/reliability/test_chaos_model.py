"""The sandbox's fault injection: parsed specs, seeded draws, and each fault as a client sees it."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from canary.cluster import api_client, is_transient
from sandbox.chaos import Chaos, ChaosSpec
from sandbox.emulated import Sandbox
from tests.support.waiting import wait_until


def test_a_spec_reads_every_fault():
    spec = ChaosSpec.parse("seed=4, api-500=0.1, api-409=0.2, api-slow=0.3, slow=200ms,"
                           "api-drop=0.01, api-stall=0.02, stall=3s, metrics-down=5s+10s,"
                           "flap=0.25, flap-window=500ms, flap-versions=v2+v3")  # fmt: skip
    assert spec == ChaosSpec(4, 0.1, 0.2, 0.3, 0.2, 0.01, 0.02, 3.0, (5.0, 10.0), 0.25, 0.5,
                             ("v2", "v3"))  # fmt: skip
    assert ChaosSpec.parse(Chaos(spec).describe()) == spec
    for bad in ("api-500=1.5", "nonsense=1", "metrics-down=5s", "api-409"):
        with pytest.raises(ValueError, match="chaos: "):
            ChaosSpec.parse(bad)


def test_draws_are_seeded():
    def draws(seed: int) -> list[str | None]:
        chaos = Chaos(ChaosSpec(seed=seed, api_500=0.3, api_409=0.3))
        return [chaos._draw("PUT", "/apis/x") for _ in range(200)]

    assert draws(1) == draws(1) != draws(2)
    assert {None, "500", "409"} == set(draws(1))
    assert Chaos(ChaosSpec(api_409=1.0))._draw("GET", "/api/v1/pods") is None  # writes only


@pytest.fixture
def box(tmp_path):
    chaos = Chaos(ChaosSpec())
    with Sandbox("healthy", seed=1, chaos=chaos) as box:
        assert box.wait_ready(10)
        yield box, str(box.write_kubeconfig(tmp_path / "kubeconfig"))


def core(kubeconfig: str) -> client.CoreV1Api:
    return client.CoreV1Api(api_client(kubeconfig))


@pytest.mark.parametrize("code", [500, 409])
def test_error_answers_are_api_statuses_and_logged(box, code):
    sandbox, kubeconfig = box
    sandbox.chaos.spec = ChaosSpec(api_500=1.0) if code == 500 else ChaosSpec(api_409=1.0)
    with pytest.raises(ApiException) as raised:
        core(kubeconfig).delete_namespaced_service("ratings", "default")
    assert raised.value.status == code and is_transient(raised.value) == (code == 500)
    assert sandbox.api.requests[-1].status == code
    assert sandbox.store.get("services", "default", "ratings") is not None  # no effect


def test_a_dropped_request_is_a_transient_error(box):
    sandbox, kubeconfig = box
    sandbox.chaos.spec = ChaosSpec(api_drop=1.0)
    with pytest.raises(Exception) as raised:
        core(kubeconfig).list_namespaced_service("default", _request_timeout=(2, 2))
    assert is_transient(raised.value), raised.value
    assert sandbox.chaos.injected["drop"] >= 1


def test_metrics_go_down_for_an_outage(box):
    sandbox, _ = box
    sandbox.chaos.metrics_outage(60)
    with pytest.raises(urllib.error.HTTPError) as raised:
        urllib.request.urlopen(sandbox.metrics_url, timeout=5)
    assert raised.value.code == 503
    sandbox.chaos.metrics_outage(0)
    with urllib.request.urlopen(sandbox.metrics_url, timeout=5) as answer:
        assert answer.status == 200


def test_flapping_toggles_the_readiness_of_chosen_versions_only(box):
    sandbox, _ = box
    sandbox.chaos.spec = ChaosSpec(seed=3, flap=0.5, flap_window=0.2, flap_versions=("v1",))

    def ready(name: str) -> int:
        dep = sandbox.store.get("deployments", "default", name)
        return dep.get("status", {}).get("readyReplicas", 0)

    wait_until(lambda: ready("reviews-v1") == 0, 10, message="reviews-v1 to flap down")
    wait_until(lambda: ready("reviews-v1") == 1, 10, message="reviews-v1 to come back")
    sandbox.chaos.spec = ChaosSpec(seed=3, flap=0.5, flap_window=0.2, flap_versions=("v9",))
    wait_until(lambda: ready("reviews-v1") == 1, 10, message="reviews-v1 to settle")
