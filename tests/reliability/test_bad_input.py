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
        assert len(err.strip().splitlines()) == 1, err
        assert "Traceback" not in err
    assert box.api.requests == [], [(r.method, r.path) for r in box.api.requests]


BASE = (
    "namespace: default\nservice: reviews\nstable: {version: v1}\n"
    'canary: {version: v2, image: "reviews:v2"}\n'
)
# Plans that cannot live in tests/bad_plans: bytes that are not UTF-8, and sizes.
GENERATED: dict[str, tuple[bytes, str]] = {
    "not-utf8": (BASE.encode() + b"routing: {host: revi\xe9ws}\n", "5: not UTF-8 text (byte 0xe9)"),
    "latin1-comment": (b"# r\xe9sum\xe9\n" + BASE.encode(), "1: not UTF-8 text (byte 0xe9)"),
    "nul-byte": (BASE.encode() + b"tests: {header: \x00}\n", "YAML syntax error: character"),
    "over-1mib": (BASE.encode() + b"#" * (1 << 20) + b"\n", "the plan is larger than 1 MiB"),
    "value-20mb": (
        BASE.encode() + b"gates: [{name: " + b"x" * (20 << 20) + b"}]\n",
        "the plan is larger than 1 MiB",
    ),
    "value-100kb": (
        BASE.encode() + b"tests: {checks: [{name: c, body: " + b"x" * 100_000 + b"}]}\n",
        "tests.checks[0].body: String should have at most 65536 characters",
    ),
}


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[str, str]]:
    folder = tmp_path_factory.mktemp("generated-plans")
    plans = {}
    for name, (data, expected) in GENERATED.items():
        path = folder / f"{name}.yaml"
        path.write_bytes(data)
        plans[name] = (str(path), expected)
    return plans


@pytest.mark.parametrize("command", ["validate", "plan", "run"])
@pytest.mark.parametrize("case", sorted(GENERATED))
def test_bytes_and_sizes_are_refused_in_one_line(
    case: str, command: str, cluster, generated, capsys
):
    box, kubeconfig = cluster
    path, expected = generated[case]
    extra = ["--kubeconfig", kubeconfig] if command == "run" else []
    code = main([command, path, *extra])
    err = capsys.readouterr().err
    assert code == 2, err[:500]
    assert err.startswith(f"{path}:") and expected in err, err[:500]
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err[:500]
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
