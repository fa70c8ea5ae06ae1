"""The pipeline assembled as in production, every part real but Slack.

`production_stack()` starts, in this order:
  * a Prefect server process (`tests/support/prefect_server.py`);
  * the Slack Web API stub (in this process, on a loopback port);
  * the sandbox at fixed addresses (`tests/support/sandbox_slot.py`) and a Prometheus
    process scraping it;
  * the plan files of `PLANS` in a configs directory of its own (CANARY_CONFIGS_DIR);
  * a `process` work pool named `canary`, then, side by side, `prefect deploy --all` of
    deploy/prefect.yaml on it, `canary approvals serve` (the listener) and a
    `prefect worker` process.

The worker's environment carries what a release reads in production: SLACK_BOT_TOKEN,
SLACK_SIGNING_SECRET and SLACK_API_URL (the stub), KUBECONFIG, CANARY_MESH_URL,
PROMETHEUS_URL, CANARY_HOME and CANARY_CONFIGS_DIR, PREFECT_API_URL and PREFECT_UI_URL.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from sandbox.prometheus import PrometheusServer
from tests.conftest import REPO
from tests.support.deployments import deploy_all
from tests.support.listener import approval_listener
from tests.support.prefect_server import PrefectServer
from tests.support.prometheus import require_prometheus
from tests.support.sandbox_slot import SandboxSlot
from tests.support.slack_stub import BOT_TOKEN, SlackStub
from tests.support.worker import PrefectWorker

SIGNING_SECRET = "e2e0signing0secret0of0the0stub0app"
CHANNEL = "#releases"
APPROVER = "U0ALICE"  # named in the plans' gates
GROUP = "S0RELEASERS"  # a Slack user group, also named in the gates
GROUP_MEMBER = "U0BOB"
INTRUDER = "U0INTRUDER"

# Gates wait long enough for a person in a browser on a busy machine; a test that ends
# before its run does cancels it (production_fixtures.started_runs).
STEP_GATE = {
    "name": "checked the page",
    "before": "step-1",
    "approvers": {"users": [APPROVER]},
    "timeout": "5m",
}
PROMOTE_GATE = {
    "name": "promote to 100%",
    "before": "promote",
    "approvers": {"users": [APPROVER], "groups": [GROUP]},
    "timeout": "5m",
    "fourEyes": True,
}


def plan_data(**overrides: Any) -> dict[str, Any]:
    """configs/bookinfo-reviews.yaml with holds and waits short enough for a test.

    Its gates, Slack channel and metric checks stay: the run exercises all of them. The
    analysis reads Prometheus from PROMETHEUS_URL, as in production.
    """
    data = yaml.safe_load((REPO / "configs" / "bookinfo-reviews.yaml").read_text())
    data["tests"]["checks"][0]["count"] = 20
    data["headerRoute"]["hold"] = 0
    data["analysis"] = {
        "interval": 1,
        "threshold": 1,
        # A 5 s window over 1 s scrapes: increase() needs two samples in it, and a busy
        # machine may miss a scrape or two. A bar well below the healthy sandbox's noise
        # (0.1 % of requests fail): a release here rolls back for what the pipeline does,
        # not for three random 5xx among a window's 200 canary requests.
        "metrics": [
            {"name": "request-success-rate", "interval": "5s", "thresholdRange": {"min": 95}}
        ],
        "noData": {"minRequests": 5},
    }
    data["steps"] = [{"weight": 20, "hold": "6s"}]
    data["promotion"] = {"hold": 0}
    data["timeouts"] = {"readiness": 10}
    data["gates"] = [STEP_GATE, PROMOTE_GATE]
    data["notifications"] = {"slack": {"channel": CHANNEL}}
    data.update(overrides)
    return data


# Plan files every run may name, written before `prefect deploy` (the deployment may offer
# the plans it finds at registration).
PLANS: dict[str, dict[str, Any]] = {
    "e2e-reviews.yaml": plan_data(),
    # A promote gate that gives up in half a minute: a lone approver never gets past it,
    # and the run ends rolled back (their two answers take seconds, even on a busy host).
    "e2e-four-eyes.yaml": plan_data(gates=[STEP_GATE, {**PROMOTE_GATE, "timeout": "30s"}]),
}
TRAIN_PLANS: dict[str, dict[str, Any]] = {
    "reviews.yaml": plan_data(
        schedule={"pendingVersion": "v3", "pendingImage": "docker.io/istio/reviews:v3"}
    ),
}


@dataclass
class ProductionStack:
    server: PrefectServer
    slack: SlackStub
    slot: SandboxSlot
    prometheus: PrometheusServer
    configs: Path
    train_configs: Path
    listener_url: str
    worker: PrefectWorker
    directory: Path

    def diagnostics(self) -> str:
        """The worker's log (the flow runs' output lands there too), for failure messages."""
        tail = self.worker.log()[-6000:]
        return f"--- worker log ({self.worker.log_path}), last lines:\n{tail}"


@contextlib.contextmanager
def production_stack(directory: Path, ui: bool = True) -> Iterator[ProductionStack]:
    """Everything started under `directory` (logs, plans, the kubeconfig), stopped after.

    `ui`: whether the Prefect server serves its UI (the browser tests open it).
    """
    binary = require_prometheus()
    configs = _write_plans(directory / "configs", PLANS)
    train_configs = _write_plans(directory / "train-configs", TRAIN_PLANS)
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(PrefectServer(ui=ui))
        slack = stack.enter_context(SlackStub())
        slack.usergroups[GROUP] = [GROUP_MEMBER]
        slot = SandboxSlot(directory)
        stack.callback(slot.close)
        prometheus = stack.enter_context(
            PrometheusServer([slot.metrics_url], binary=binary, wait_for_first_scrape=False)
        )
        env = _release_env(server, slack, slot, prometheus, configs, directory)
        # Each of these starts a Python process that imports Prefect: side by side, they
        # are ready in the time of the slowest (`prefect deploy`), not of all three.
        with concurrent.futures.ThreadPoolExecutor(1) as background:
            deploying = background.submit(deploy_all, env)
            worker = stack.enter_context(PrefectWorker(env, directory / "worker.log"))
            listener_url = stack.enter_context(approval_listener(env, directory / "listener.log"))
            deploying.result()
        yield ProductionStack(
            server=server,
            slack=slack,
            slot=slot,
            prometheus=prometheus,
            configs=configs,
            train_configs=train_configs,
            listener_url=listener_url,
            worker=worker,
            directory=directory,
        )


def _write_plans(directory: Path, plans: dict[str, dict[str, Any]]) -> Path:
    directory.mkdir(parents=True)
    for name, data in plans.items():
        (directory / name).write_text(yaml.safe_dump(data, sort_keys=False))
    return directory


def _release_env(
    server: PrefectServer,
    slack: SlackStub,
    slot: SandboxSlot,
    prometheus: PrometheusServer,
    configs: Path,
    directory: Path,
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "SLACK_"))}
    home = directory / "prefect-home"  # the worker's and listener's own Prefect profile
    home.mkdir()
    return (
        env
        | server.client_env()
        | {
            "PREFECT_HOME": str(home),
            "SLACK_BOT_TOKEN": BOT_TOKEN,
            "SLACK_SIGNING_SECRET": SIGNING_SECRET,
            "SLACK_API_URL": slack.url,
            "KUBECONFIG": str(slot.kubeconfig),
            "CANARY_MESH_URL": slot.ingress_url,
            "PROMETHEUS_URL": prometheus.url,
            "CANARY_HOME": str(REPO),
            "CANARY_CONFIGS_DIR": str(configs),
        }
    )
