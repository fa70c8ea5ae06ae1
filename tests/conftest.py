"""Root fixtures: a real Prefect for the session, and sandboxes to release into.

Prefect reads its settings from the environment when it is imported, so its home and
analytics switch are set here, before any test module imports it.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

_PREFECT_HOME = tempfile.mkdtemp(prefix="canary-tests-prefect-")
os.environ["PREFECT_HOME"] = _PREFECT_HOME
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW"] = "ignore"  # tasks run alone in tests
os.environ.pop("PREFECT_API_URL", None)  # never a developer's own server
atexit.register(shutil.rmtree, _PREFECT_HOME, ignore_errors=True)

import uuid  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
REAL_CLUSTER_LANE = "tests/real_cluster/"


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """`--dist loadfile`, with the real-cluster lane as one unit: its tests share one
    control plane (a session fixture), so they all run on one worker, beside the others."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class LaneScheduling(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            if nodeid.startswith(REAL_CLUSTER_LANE):
                return REAL_CLUSTER_LANE
            return super()._split_scope(nodeid)

    return LaneScheduling(config, log)


@pytest.fixture(scope="session")
def prefect_api_url() -> Iterator[str]:
    """A Prefect server (test harness, SQLite in a scratch directory) for the session."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    # A busy machine (a shared CI runner) can take minutes to start it.
    with prefect_test_harness(server_startup_timeout=300):
        yield str(PREFECT_API_URL.value())


@dataclass
class RunningSandbox:
    sandbox: Any  # sandbox.emulated.Sandbox
    kubeconfig: str

    @property
    def store(self) -> Any:
        return self.sandbox.store

    @property
    def api(self) -> Any:
        return self.sandbox.api

    def get(self, resource: str, name: str, namespace: str = "default") -> dict | None:
        return self.sandbox.store.get(resource, namespace, name)

    def writes(self) -> list[Any]:
        return self.sandbox.api.writes()

    @property
    def target(self) -> Any:
        """Where a release into this sandbox runs: its API server and its ingress."""
        from canary.release import ReleaseTarget

        return ReleaseTarget(kubeconfig=self.kubeconfig, mesh_url=self.sandbox.ingress_url)


@pytest.fixture
def start_sandbox(tmp_path: Path) -> Iterator[Callable[..., RunningSandbox]]:
    """Start sandboxes (BookInfo preloaded, reviews-v1 ready); all stop after the test."""
    from sandbox.emulated import Sandbox

    started: list[Any] = []

    def start(scenario: str = "healthy", **options: Any) -> RunningSandbox:
        options.setdefault("seed", 11)
        box = Sandbox(scenario, **options).start()
        started.append(box)
        assert box.wait_ready(10), "the sandbox's BookInfo did not become ready"
        kubeconfig = box.write_kubeconfig(tmp_path / f"kubeconfig-{uuid.uuid4().hex[:6]}")
        return RunningSandbox(box, str(kubeconfig))

    yield start
    for box in started:
        box.stop()


def _fast_plan_data(**overrides: Any) -> dict[str, Any]:
    """The BookInfo reviews plan with waits short enough for tests."""
    return fast_plan_data_from(REPO / "configs" / "bookinfo-reviews.yaml", **overrides)


def fast_plan_data_from(plan_file: Path, **overrides: Any) -> dict[str, Any]:
    """A plan file's data with waits short enough for tests, top-level fields overridden."""
    import yaml

    data = yaml.safe_load(plan_file.read_text())
    for unattended in ("gates", "notifications"):  # nobody approves in a test
        data.pop(unattended, None)
    data["headerRoute"]["hold"] = 0
    data["analysis"] = {"interval": 1, "threshold": 1, "stepWeights": [20]}
    data["promotion"] = {"hold": 0}
    data["timeouts"] = {"readiness": 5}
    data.update(overrides)
    return data


@pytest.fixture
def plan_data() -> Callable[..., dict[str, Any]]:
    """Plan data (camelCase, as in a plan file) with top-level fields overridden."""
    return _fast_plan_data


@pytest.fixture
def fast_plan() -> Callable[..., Any]:
    """A ReleasePlan from `plan_data`."""
    from canary.plan import plan_from_dict

    def make(**overrides: Any) -> Any:
        return plan_from_dict(_fast_plan_data(**overrides))

    return make
