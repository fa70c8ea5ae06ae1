"""Shared fixtures: one running sandbox per test session, and official-client handles on it."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kubernetes import client, config

from sandbox.emulated import Sandbox

REPO = Path(__file__).resolve().parents[2]
REFERENCE = REPO.parent / "shared" / "reference" / "istio"


def api_client(sandbox: Sandbox, directory: Path) -> client.ApiClient:
    """An ``ApiClient`` built from the sandbox's kubeconfig, as the pipeline builds one."""
    kubeconfig = sandbox.write_kubeconfig(directory / f"kubeconfig-{uuid.uuid4().hex[:6]}")
    return config.new_client_from_config(config_file=str(kubeconfig), context="sandbox")


@pytest.fixture(scope="session")
def sandbox() -> Iterator[Sandbox]:
    """The sandbox with BookInfo preloaded in ``default`` and the healthy scenario."""
    with Sandbox("healthy", seed=7) as running:
        yield running


@pytest.fixture(scope="session")
def k8s(sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> Iterator[client.ApiClient]:
    with api_client(sandbox, tmp_path_factory.mktemp("kube")) as api:
        yield api


@pytest.fixture
def namespace(k8s: client.ApiClient) -> Iterator[str]:
    """A fresh namespace, so tests sharing the session sandbox do not see each other."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(k8s)
    core.create_namespace({"metadata": {"name": name}})
    yield name
    core.delete_namespace(name)


@pytest.fixture
def make_sandbox(tmp_path: Path) -> Iterator[Callable[..., tuple[Sandbox, client.ApiClient]]]:
    """Start extra sandboxes (e.g. another scenario); all are stopped after the test."""
    started: list[tuple[Sandbox, client.ApiClient]] = []

    def make(*args: object, **kwargs: object) -> tuple[Sandbox, client.ApiClient]:
        box = Sandbox(*args, **kwargs).start()  # type: ignore[arg-type]
        started.append((box, api_client(box, tmp_path)))
        return started[-1]

    yield make
    for box, api in started:
        api.close()
        box.stop()
