"""``canary sandbox`` / ``python -m sandbox``: foreground run, kubeconfig, clean stop."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from kubernetes import client, config

from tests.sandbox.conftest import REPO


def _read_lines(stream, count: int, timeout: float) -> list[str]:
    lines: list[str] = []

    def read() -> None:
        while len(lines) < count:
            line = stream.readline()
            if not line:
                return
            lines.append(line.rstrip("\n"))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout)
    return lines


def test_foreground_run_serves_writes_kubeconfig_and_stops_on_sigterm(tmp_path: Path):
    kubeconfig = tmp_path / "sandbox.kubeconfig"
    with subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sandbox",
            "--kubeconfig",
            str(kubeconfig),
            "--seed",
            "1",
            "--startup-delay",
            "0.1",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            lines = _read_lines(proc.stdout, 4, timeout=15)
            assert [line.split()[0] for line in lines] == [
                "api",
                "ingress",
                "metrics",
                "kubeconfig",
            ]
            urls = dict(line.split() for line in lines)
            assert urls["metrics"].endswith("/metrics")
            assert Path(urls["kubeconfig"]) == kubeconfig.resolve()
            with config.new_client_from_config(config_file=str(kubeconfig)) as api:
                assert api.configuration.host == urls["api"]
                names = {
                    d.metadata.name
                    for d in client.AppsV1Api(api).list_namespaced_deployment("default").items
                }
            assert names == {"details-v1", "ratings-v1", "reviews-v1", "productpage-v1"}
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=10) == 0
            assert "Traceback" not in proc.stderr.read()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.mark.parametrize(
    "argv",
    [
        ["--bogus"],
        ["--api-port", "http"],
        ["--api-port", "70000"],
        ["--scenario", "no-such-scenario"],
        ["--istio-crds", "/no/such/file.yaml"],
    ],
)
def test_bad_flags_give_one_line_and_exit_2(argv, capsys):
    from sandbox.cli import sandbox_main

    assert sandbox_main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("canary sandbox: error: ")
