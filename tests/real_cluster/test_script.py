"""scripts/real-cluster.sh and its parts, without a cluster where none is needed."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s
from real_cluster import build, processes  # scripts/ is on sys.path (conftest)
from real_cluster.errors import ComponentError

from tests.real_cluster.conftest import RealCluster, real_cluster_script
from tests.support.waiting import wait_until

pytestmark = pytest.mark.timeout(600)


def go_mod_edit_json(replace: list[tuple[str, str, str]]) -> dict:
    """The shape `go mod edit -json` prints, with the given (old, new path, new version)."""
    return {
        "Module": {"Path": "k8s.io/kubernetes"},
        "Go": "1.26.0",
        "Replace": [
            {
                "Old": {"Path": old},
                "New": {"Path": new, **({"Version": version} if version else {})},
            }
            for old, new, version in replace
        ],
    }


def test_every_staging_module_is_replaced_by_its_release():
    modfile = go_mod_edit_json(
        [
            ("k8s.io/apimachinery", "./staging/src/k8s.io/apimachinery", ""),
            ("k8s.io/api", "./staging/src/k8s.io/api", ""),
            ("github.com/some/fork", "github.com/other/fork", "v1.2.3"),  # not a staging module
        ]
    )
    assert build.staging_replacements(modfile, "v1.37.2") == [
        "k8s.io/api=k8s.io/api@v0.37.2",
        "k8s.io/apimachinery=k8s.io/apimachinery@v0.37.2",
    ]


def test_a_go_mod_without_staging_modules_is_refused():
    with pytest.raises(ValueError, match="replaces no staging module"):
        build.staging_replacements(go_mod_edit_json([]), "v1.37.2")


@pytest.mark.parametrize("version", ["v2.0.1", "1.37", "v1"])
def test_only_kubernetes_1_releases_map_to_staging_releases(version: str):
    with pytest.raises(ValueError, match=r"not a Kubernetes 1\.x release"):
        build.staging_version(version)


def test_the_pinned_build_derived_its_replacements_from_the_downloaded_go_mod():
    wrapper = build.version_dir() / "src" / "kubernetes" / "go.mod"
    if not wrapper.is_file():
        pytest.skip("no Kubernetes build in the cache")
    edited = subprocess.run(
        [str(build.go_command()), "mod", "edit", "-json", str(wrapper)],
        capture_output=True,
        text=True,
        check=True,
    )
    replaced = {r["Old"]["Path"]: r["New"] for r in json.loads(edited.stdout)["Replace"]}
    assert replaced["k8s.io/api"] == {
        "Path": "k8s.io/api",
        "Version": build.staging_version(build.PINNED.kubernetes),
    }
    assert len(replaced) >= 20  # every staging module, not a hand-picked few


def test_a_component_that_exits_is_named_with_its_cause_and_log(tmp_path: Path):
    part = processes.Component("etcd", tmp_path)
    process = processes.start(
        part, ["/bin/sh", "-c", "echo 'bind: address already in use'; exit 3"]
    )
    with pytest.raises(ComponentError) as failed:
        processes.wait_for(part, process, lambda: False, timeout=60, what="ready")
    assert failed.value.line() == (
        f"etcd: exited with code 3: bind: address already in use "
        f"(log: {tmp_path / 'logs' / 'etcd.log'})"
    )


def test_down_stops_by_pid_only_what_up_recorded(tmp_path: Path):
    sleeper = subprocess.Popen(["sleep", "300"])
    try:
        # A pid file whose pid now runs another program (a reused pid) is left alone.
        stranger = processes.Component("etcd", tmp_path)
        stranger.pid_file.parent.mkdir(parents=True)
        stranger.pid_file.write_text(f"{sleeper.pid} /nowhere/etcd\n")
        done = real_cluster_script("down", str(tmp_path), timeout=60)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "real-cluster.sh down: stopped nothing"
        assert sleeper.poll() is None
        assert not stranger.pid_file.exists()
        # One that runs the recorded binary is stopped.
        ours = processes.Component("kwok", tmp_path)
        ours.pid_file.write_text(f"{sleeper.pid} {sleeper.args[0]}\n")
        assert ours.running()
        done = real_cluster_script("down", str(tmp_path), timeout=60)
        assert done.stdout.strip() == "real-cluster.sh down: stopped kwok"
        wait_until(lambda: sleeper.poll() is not None, timeout=30, message="sleep stopped")
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_missing_crd_file_is_one_line_and_nothing_starts(tmp_path: Path):
    done = real_cluster_script(
        "up", str(tmp_path / "cluster"), env={"CRDS": str(tmp_path / "no-such.yaml")}, timeout=60
    )
    assert done.returncode == 1
    assert done.stderr == (f"real-cluster.sh up: CRDS: no such file: {tmp_path / 'no-such.yaml'}\n")
    assert not list((tmp_path / "cluster").glob("pids/*"))


def test_a_bad_command_is_refused_with_usage():
    done = real_cluster_script("sideways", timeout=60)
    assert done.returncode == 2
    assert "invalid choice: 'sideways'" in done.stderr
    assert "Traceback" not in done.stderr


def test_up_refuses_a_directory_whose_cluster_runs(real_cluster: RealCluster):
    done = real_cluster_script("up", str(real_cluster.directory), timeout=60)
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1
    assert done.stderr.startswith(
        f"real-cluster.sh up: up: {real_cluster.directory} already "
        "has a running cluster (etcd, kube-apiserver,"
    )
    assert (real_cluster.directory / "admin.kubeconfig").is_file()  # untouched


def test_the_api_reports_the_pinned_release(admin_api: Any):
    assert k8s.VersionApi(admin_api).get_code().git_version == build.PINNED.kubernetes


def cache_with_a_broken_apiserver(root: Path) -> Path:
    """A build cache whose binaries are the real ones, but for a kube-apiserver that dies."""
    real = build.version_dir()
    fake = root / build.PINNED.kubernetes
    (fake / "bin").mkdir(parents=True)
    for entry in (real / "bin").iterdir():
        (fake / "bin" / entry.name).symlink_to(entry)
    (fake / "kwok-stages.yaml").symlink_to(real / "kwok-stages.yaml")
    broken = fake / "bin" / "kube-apiserver"
    broken.unlink()
    broken.write_text("#!/bin/sh\necho 'Error: invalid argument for --secure-port' >&2\nexit 1\n")
    broken.chmod(0o755)
    return root


def test_a_component_that_fails_to_start_is_one_line_and_the_rest_is_stopped(tmp_path: Path):
    if build.missing():
        pytest.skip("the real cluster's binaries are not built")
    cache = cache_with_a_broken_apiserver(tmp_path / "cache")
    directory = tmp_path / "cluster"
    done = real_cluster_script(
        "up", str(directory), env={"CANARY_REAL_CLUSTER_CACHE": str(cache)}, timeout=300
    )
    assert done.returncode == 1
    log = directory / "logs" / "kube-apiserver.log"
    assert done.stderr == (
        "real-cluster.sh up: kube-apiserver: exited with code 1: Error: invalid argument for "
        f"--secure-port (log: {log})\n"
    )
    # etcd, started before the API server, was stopped when it died.
    assert not processes.Component("etcd", directory).pid_file.exists()
    assert not processes_naming(str(directory / "etcd"))
    assert not (directory / "admin.kubeconfig").exists()


def processes_naming(text: str) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and text.encode() in (proc / "cmdline").read_bytes():
                found.append(int(proc.name))
        except OSError:
            continue  # gone meanwhile
    return found
