"""Release reports: artifacts in the flow run, files for `canary run` and `canary demo`.

The metric curves come from a real Prometheus scraping the sandbox's Istio metrics.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

from canary.report.publishing import reporting_to
from canary.report.sampling import sample_metrics
from flows.canary_release import canary_release
from sandbox.prometheus import PrometheusServer
from tests.support.prometheus import require_prometheus

pytestmark = pytest.mark.usefixtures("prefect_api_url")

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def png_size(png: bytes) -> tuple[int, int]:
    assert png[:8] == PNG_MAGIC
    width, height = struct.unpack(">II", png[16:24])  # the IHDR chunk comes first
    return width, height


def decision_cells(markdown: str, phase: str) -> list[str]:
    """The cells of the first row of the decisions table for `phase`."""
    section = markdown.split("## Decisions", 1)[1].split("##", 1)[0]
    row = next(line for line in section.splitlines() if f"| {phase} |" in line)
    return [cell.strip() for cell in row.strip("|").split("|")]


def artifacts_of(run_id: UUID) -> dict[str, Any]:
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]))
        )
    return {artifact.type: artifact for artifact in found}


def run(plan: Any, box: Any, report: Path) -> Any:
    with reporting_to(report):
        return canary_release(plan, target=box.target, return_state=True)


def test_a_promoted_release_is_reported_with_its_metrics(start_sandbox, fast_plan, tmp_path):
    binary = require_prometheus()
    box = start_sandbox("healthy", rps=200)
    with PrometheusServer([box.sandbox.metrics_url], binary=binary) as prometheus:
        plan = fast_plan(
            steps=[{"weight": 20, "hold": "4s"}],
            promotion={"hold": "2s"},
            analysis={"interval": 1, "prometheus": {"url": prometheus.url}},
        )
        state = run(plan, box, tmp_path / "report.md")
        result = state.result()
        curves, source = sample_metrics(plan, result.started, result.finished)

    text = (tmp_path / "report.md").read_text()
    assert text.startswith("# reviews v1 → v2: promoted\n")
    assert f"Source: Prometheus at {prometheus.url}: Istio metrics per workload" in text
    assert "| time | phase | decision | canary ok % | stable ok % |" in text
    canary_ok, stable_ok = decision_cells(text, "step-1")[3:5]  # the values at the verdict
    assert 95 <= float(canary_ok) <= 100 and 95 <= float(stable_ok) <= 100
    assert "![canary and stable over the release](report.png)" in text
    assert png_size((tmp_path / "report.png").read_bytes()) == (900, 750)
    by_name = {(c.role, c.quantity): c.points for c in curves}
    assert len(by_name[("stable", "success-rate")]) >= 5, source
    assert by_name[("canary", "success-rate")], "the canary's traffic was sampled"
    assert all(95 <= value <= 100 for _, value in by_name[("canary", "success-rate")])
    assert all(value > 0 for _, value in by_name[("canary", "latency-p99")])

    artifacts = artifacts_of(state.state_details.flow_run_id)
    assert artifacts.keys() >= {"markdown", "table", "progress"}
    assert artifacts["markdown"].key == "release-report-default-reviews"
    assert "data:image/png;base64," in artifacts["markdown"].data
    rows = json.loads(artifacts["table"].data)
    assert [r["phase"] for r in rows] == [p.name for p in result.phases]
    assert artifacts["progress"].data == 100.0


def test_a_rolled_back_release_is_reported_with_its_reason(start_sandbox, fast_plan, tmp_path):
    box = start_sandbox("faulty")

    state = run(fast_plan(), box, tmp_path / "faulty.md")

    assert state.is_failed()
    text = (tmp_path / "faulty.md").read_text()
    assert text.startswith("# reviews v1 → v2: rolled-back\n")
    assert "**Outcome: rolled-back** — test: checks failed: reviews-answer: FAILED" in text
    assert "| test |" in text and "| failed |" in text
    assert "| test | fail |" in text  # the decision, with the checks' message
    assert "Source: no Prometheus for this plan: the plot shows the health rounds." in text
    assert png_size((tmp_path / "faulty.png").read_bytes())[0] == 900
    artifacts = artifacts_of(state.state_details.flow_run_id)
    assert artifacts["progress"].data == 0.0
    assert "rolled-back" in artifacts["markdown"].description


def canary_command(*args: str, api_url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "canary", *args],
        capture_output=True,
        text=True,
        env=os.environ | {"PREFECT_API_URL": api_url},
        timeout=120,
    )


def test_canary_run_writes_the_report(start_sandbox, plan_data, prefect_api_url, tmp_path):
    box = start_sandbox("healthy")
    plan = tmp_path / "plan.yaml"
    plan.write_text(yaml.safe_dump(plan_data()))
    report = tmp_path / "out" / "release.md"

    done = canary_command(
        "run",
        str(plan),
        "--kubeconfig",
        box.kubeconfig,
        "--mesh-url",
        box.sandbox.ingress_url,
        "--report",
        str(report),
        api_url=prefect_api_url,
    )

    assert done.returncode == 0, done.stderr
    assert f"report    {report}  (plot: {report.with_suffix('.png')})" in done.stdout
    assert "**Outcome: promoted**" in report.read_text()
    assert png_size(report.with_suffix(".png").read_bytes()) == (900, 750)


def test_canary_demo_writes_the_report(prefect_api_url, tmp_path):
    report = tmp_path / "demo.md"

    done = canary_command(
        "demo", "--scenario", "faulty", "--report", str(report), api_url=prefect_api_url
    )

    assert done.returncode == 3, done.stderr
    assert f"report    {report}" in done.stdout
    assert "**Outcome: rolled-back**" in report.read_text()
    assert report.with_suffix(".png").read_bytes()[:8] == PNG_MAGIC
