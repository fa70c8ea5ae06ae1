"""Every malformed plan is refused by validate, plan and run: exit 2, the field named, and
not a single request to the cluster."""

from __future__ import annotations

from pathlib import Path

import pytest

from canary.cli import main
from tests.test_plan_validation import BAD_PLANS, expectation


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    from sandbox.emulated import Sandbox

    with Sandbox("healthy", seed=1) as box:
        box.api.clear_requests()
        yield box, str(box.write_kubeconfig(tmp_path_factory.mktemp("kube") / "config"))


@pytest.mark.parametrize("command", ["validate", "plan", "run"])
def test_bad_plans_are_refused_before_any_request(command: str, cluster, capsys):
    box, kubeconfig = cluster
    extra = ["--kubeconfig", kubeconfig] if command == "run" else []
    for path in BAD_PLANS:
        code = main([command, str(path), *extra])
        err = capsys.readouterr().err
        assert code == 2, (path, err)
        assert expectation(path) in err, (path, err)
        assert err.startswith(f"{path}:"), err  # PLAN:LINE: field.path: message
        assert "Traceback" not in err
    assert box.api.requests == [], [(r.method, r.path) for r in box.api.requests]


def test_the_request_log_would_have_seen_a_request(cluster):
    from kubernetes import client

    from canary.cluster import api_client

    box, kubeconfig = cluster
    client.CoreV1Api(api_client(kubeconfig)).list_namespaced_service("default")
    assert [r.method for r in box.api.requests] == ["GET"]
    box.api.clear_requests()


def test_the_corpus_covers_judges_templates_and_steps():
    names = {Path(p).stem for p in BAD_PLANS}
    assert {"unknown-judge", "query-undefined-variable", "steps-not-increasing"} <= names
