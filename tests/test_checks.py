"""The test phase's checks, sent through the sandbox's mesh ingress."""

from __future__ import annotations

import time
from typing import Any

import pytest

from canary.checks import MESH_URL_ENV, base_url, run_checks
from canary.cluster import Cluster, api_client
from canary.manifests import canary_deployment, same_deployment
from canary.planner import phase_named, routing_for
from canary.routing.istio import IstioRouter

REVIEWS = {"name": "reviews", "path": "/reviews/0", "bodyContains": '"reviews"'}


def plan_with(fast_plan: Any, checks: list[dict] = (), commands: list[dict] = ()) -> Any:
    return fast_plan(tests={"port": 9080, "checks": list(checks), "commands": list(commands)})


def test_a_healthy_service_passes(start_sandbox, fast_plan):
    box = start_sandbox()
    plan = plan_with(fast_plan, [REVIEWS | {"count": 30}])

    report = run_checks(plan, "r1", box.sandbox.ingress_url)

    assert report.passed
    [result] = report.results
    assert (result.attempts, result.failures) == (30, 0)
    assert report.reason == "reviews: passed (30/30 ok)"


def test_wrong_status_and_missing_text_fail_with_the_reason(start_sandbox, fast_plan):
    box = start_sandbox()
    plan = plan_with(
        fast_plan,
        [
            REVIEWS | {"name": "created", "expectStatus": 201, "count": 3, "maxFailures": 2},
            REVIEWS | {"name": "stars", "bodyContains": "no such text", "count": 2},
        ],
    )

    report = run_checks(plan, "r1", box.sandbox.ingress_url)

    assert not report.passed
    assert [r.failures for r in report.results] == [3, 2]
    assert "created: FAILED (0/3 ok; 3x status 200, expected 201)" in report.reason
    assert "stars: FAILED (0/2 ok; 2x body lacks 'no such text')" in report.reason


def test_only_requests_with_the_test_header_reach_the_canary(start_sandbox, fast_plan):
    box = start_sandbox()
    black_stars = REVIEWS | {"name": "v2-answers", "bodyContains": "black", "count": 20}
    plan = plan_with(fast_plan, [black_stars])
    api = api_client(box.kubeconfig)
    cluster = Cluster(api, "default")
    canary = canary_deployment(plan, box.get("deployments", "reviews-v1"), "r1")
    cluster.apply_deployment(canary, same_deployment)
    cluster.wait_ready("reviews-v2", time.monotonic() + 5)
    IstioRouter(api, "default", "reviews", "reviews").set_routes(
        routing_for(plan, phase_named(plan, "test"), "r1")
    )

    assert run_checks(plan, "r1", box.sandbox.ingress_url).passed
    other_run = run_checks(plan, "another-run", box.sandbox.ingress_url)
    assert other_run.results[0].failures == 20


def test_an_unreachable_url_fails_every_request(fast_plan):
    plan = plan_with(fast_plan, [REVIEWS | {"count": 2, "timeout": "1s"}])

    report = run_checks(plan, "r1", "http://127.0.0.1:9")

    assert not report.passed and "2x ConnectError" in report.reason


def test_commands_get_the_url_header_and_release_id(fast_plan, tmp_path):
    seen = tmp_path / "env"
    plan = plan_with(
        fast_plan,
        commands=[
            {
                "name": "env",
                "run": f'echo "$CANARY_TEST_URL|$CANARY_TEST_HEADER|$CANARY_RELEASE_ID" > {seen}',
            },
            {"name": "fails", "run": "echo broken >&2; exit 3"},
            {"name": "hangs", "run": "sleep 5", "timeout": "300ms"},
        ],
    )

    report = run_checks(plan, "r1", "http://127.0.0.1:8002")

    assert seen.read_text().strip() == "http://127.0.0.1:8002|x-canary-test: r1|r1"
    assert [r.passed for r in report.results] == [True, False, False]
    assert report.results[1].detail == "exit 3: broken"
    assert report.results[2].detail == "timed out after 0.3s"


@pytest.mark.parametrize(
    ("plan_url", "mesh_url", "env_url", "expected"),
    [
        (
            "http://127.0.0.1:8001/",
            "http://127.0.0.1:8002",
            "http://127.0.0.1:8003",
            "http://127.0.0.1:8001",
        ),
        (None, "http://127.0.0.1:8002/", "http://127.0.0.1:8003", "http://127.0.0.1:8002"),
        (None, None, "http://127.0.0.1:8003", "http://127.0.0.1:8003"),
        (None, None, None, "http://reviews.default.svc.cluster.local:9080"),
    ],
)
def test_where_checks_go(fast_plan, monkeypatch, plan_url, mesh_url, env_url, expected):
    tests: dict[str, Any] = {"port": 9080}
    if plan_url:
        tests["baseUrl"] = plan_url
    if env_url:
        monkeypatch.setenv(MESH_URL_ENV, env_url)
    else:
        monkeypatch.delenv(MESH_URL_ENV, raising=False)

    assert base_url(fast_plan(tests=tests), mesh_url) == expected
