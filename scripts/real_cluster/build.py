"""Builds the cluster's binaries through the Go module proxy, cached outside the repository.

Layout of the cache (``$CANARY_REAL_CLUSTER_CACHE``, default ``~/.cache/canary-real-cluster``):

    go/                    GOPATH: the module cache, shared by every version
    go-build/              GOCACHE: compiled packages, so a rebuild is fast
    <kubernetes version>/
        src/<component>/   the generated wrapper modules (go.mod, go.sum)
        bin/               kube-apiserver, kube-controller-manager, kube-scheduler, etcd, kwok
        bin/.<component>   the version each component was built at
        kwok-stages.yaml   kwok's own stages for a fast Node and Pods, from its module
        build.lock

`k8s.io/kubernetes` cannot be built with a plain `go install`: its go.mod points every
staging module (k8s.io/api, k8s.io/apimachinery, ...) at a directory of its repository. The
wrapper module requires it and replaces each of those with the staging module's own release
(v1.X.Y -> v0.X.Y); the list is read from the downloaded go.mod, so it follows the version.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from real_cluster.errors import ComponentError


@dataclass(frozen=True)
class Versions:
    """The pinned versions: Kubernetes, the etcd it supports, and kwok."""

    kubernetes: str
    etcd: str
    kwok: str

    def __str__(self) -> str:
        return f"Kubernetes {self.kubernetes}, etcd {self.etcd}, kwok {self.kwok}"


# Kubernetes: the newest release whose go.mod (go 1.26.0) the machine's Go 1.26 builds.
# etcd: the newest patch of the 3.7 line, the one this Kubernetes's go.mod requires.
# kwok: the newest release; it supports Kubernetes up to 1.36 and is only a client here.
PINNED = Versions(kubernetes="v1.37.2", etcd="v3.7.3", kwok="v0.8.0")

KUBERNETES_COMMANDS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler")
BINARIES = (*KUBERNETES_COMMANDS, "etcd", "kwok")
STAGING_PREFIX = "./staging/src/"

# kwok's default stages (what kwokctl gives a cluster): a Node that initialises and keeps
# its lease, Pods that become Ready, complete and go away when deleted.
KWOK_STAGE_FILES = (
    "kustomize/stage/node/fast/node-initialize.yaml",
    "kustomize/stage/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
    "kustomize/stage/pod/fast/pod-ready.yaml",
    "kustomize/stage/pod/fast/pod-complete.yaml",
    "kustomize/stage/pod/fast/pod-delete.yaml",
)


def go_command() -> str | None:
    """The go command: on PATH, or where Go's own archive installs it (a shell that did not
    read the profile that puts it on PATH)."""
    found = shutil.which("go")
    if found is None and Path("/usr/local/go/bin/go").is_file():
        found = "/usr/local/go/bin/go"
    return found


def cache_root() -> Path:
    if explicit := os.environ.get("CANARY_REAL_CLUSTER_CACHE"):
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "canary-real-cluster"


def version_dir(versions: Versions = PINNED) -> Path:
    return cache_root() / versions.kubernetes


def bin_dir(versions: Versions = PINNED) -> Path:
    return version_dir(versions) / "bin"


def kwok_stages_file(versions: Versions = PINNED) -> Path:
    return version_dir(versions) / "kwok-stages.yaml"


def staging_version(kubernetes_version: str) -> str:
    """The staging modules' release for a Kubernetes release: v1.37.2 -> v0.37.2."""
    release = re.fullmatch(r"v1\.(\d+\.\d+(?:-[0-9A-Za-z.]+)?)", kubernetes_version)
    if release is None:
        raise ValueError(f"not a Kubernetes 1.x release: {kubernetes_version}")
    return f"v0.{release.group(1)}"


def staging_replacements(modfile: dict[str, Any], kubernetes_version: str) -> list[str]:
    """``go mod edit -replace`` arguments for every staging module in Kubernetes's go.mod.

    ``modfile`` is what ``go mod edit -json`` prints for that go.mod.
    """
    release = staging_version(kubernetes_version)
    replaced = [
        entry["Old"]["Path"]
        for entry in modfile.get("Replace") or []
        if entry["New"]["Path"].startswith(STAGING_PREFIX) and not entry["New"].get("Version")
    ]
    if not replaced:
        raise ValueError("the go.mod replaces no staging module")
    return [f"{path}={path}@{release}" for path in sorted(replaced)]


def kubernetes_ldflags(kubernetes_version: str) -> str:
    """Version stamps the Kubernetes build scripts set, so /version reports the release."""
    major, minor, _ = kubernetes_version.removeprefix("v").split(".", 2)
    built = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    stamps = {
        "gitVersion": kubernetes_version,
        "gitMajor": major,
        "gitMinor": minor,
        "gitTreeState": "clean",
        "buildDate": built,
    }
    flags = ["-s", "-w"]  # no symbol tables: a smaller, faster link
    for package in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [f"-X {package}.{name}={value}" for name, value in stamps.items()]
    return " ".join(flags)


class GoBuild:
    """Runs the go command with the cache's GOPATH and GOCACHE, niced, logging to one file."""

    def __init__(self, go: str, root: Path, log: Path) -> None:
        self.go = go
        self.root = root
        self.log = log
        self.env = {
            **os.environ,
            "GOPATH": str(root / "go"),
            "GOMODCACHE": str(root / "go" / "pkg" / "mod"),
            "GOCACHE": str(root / "go-build"),
            "GOFLAGS": "-modcacherw -buildvcs=false",  # a cache that can be deleted
            "GOTOOLCHAIN": "local",  # never fetch another Go: fail and say so
            "GOWORK": "off",
            "CGO_ENABLED": "0",
        }
        self.nice = ["nice", "-n", "10"] if shutil.which("nice") else []

    def run(
        self,
        component: str,
        args: Sequence[str],
        cwd: Path,
        extra_env: dict[str, str] | None = None,
    ) -> str:
        env = {**self.env, **(extra_env or {})}
        with self.log.open("a") as log:
            log.write(f"$ (cd {cwd} && go {' '.join(args)})\n")
            log.flush()
            done = subprocess.run(
                [*self.nice, self.go, *args], cwd=cwd, env=env, text=True, capture_output=True
            )
            log.write(done.stderr)
            if args[0] != "mod" or "-json" not in args:
                log.write(done.stdout)
        if done.returncode != 0:
            raise ComponentError(
                f"build {component}",
                last_error_line(done.stderr) or f"go {args[0]} exited {done.returncode}",
                self.log,
            )
        return done.stdout

    def download(self, component: str, module: str, cwd: Path) -> dict[str, Any]:
        """Downloads one module version; its go.mod path (GoMod) and directory (Dir)."""
        return json.loads(self.run(component, ["mod", "download", "-json", module], cwd))

    def modfile(self, component: str, gomod: str, cwd: Path) -> dict[str, Any]:
        return json.loads(self.run(component, ["mod", "edit", "-json", gomod], cwd))


def last_error_line(stderr: str) -> str:
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def new_wrapper(go: GoBuild, component: str, src: Path) -> None:
    """An empty module in ``src`` (old go.mod and go.sum dropped), at the machine's Go."""
    shutil.rmtree(src, ignore_errors=True)
    src.mkdir(parents=True)
    go.run(component, ["mod", "init", f"canary-real-cluster/{component}"], src)


def build_kubernetes(go: GoBuild, versions: Versions, out: Path) -> None:
    src = version_dir(versions) / "src" / "kubernetes"
    new_wrapper(go, "kubernetes", src)
    module = go.download("kubernetes", f"k8s.io/kubernetes@{versions.kubernetes}", src)
    modfile = go.modfile("kubernetes", module["GoMod"], src)
    edits = [f"-replace={r}" for r in staging_replacements(modfile, versions.kubernetes)]
    edits += [f"-godebug={d['Key']}={d['Value']}" for d in modfile.get("GoDebug") or []]
    go.run("kubernetes", ["mod", "edit", *edits], src)
    packages = [f"k8s.io/kubernetes/cmd/{name}" for name in KUBERNETES_COMMANDS]
    go.run("kubernetes", ["get", *(f"{p}@{versions.kubernetes}" for p in packages)], src)
    go.run(
        "kubernetes",
        [
            "build",
            "-trimpath",
            "-ldflags",
            kubernetes_ldflags(versions.kubernetes),
            "-o",
            f"{out}/",
            *packages,
        ],
        src,
    )


def build_etcd(go: GoBuild, versions: Versions, out: Path) -> None:
    # etcd's server module also points its sibling modules at directories, so it needs a
    # wrapper too; the siblings' releases are what its go.mod requires.
    src = version_dir(versions) / "src" / "etcd"
    new_wrapper(go, "etcd", src)
    go.run("etcd", ["get", f"go.etcd.io/etcd/server/v3@{versions.etcd}"], src)
    go.run(
        "etcd",
        [
            "build",
            "-trimpath",
            "-ldflags",
            "-s -w",
            "-o",
            str(out / "etcd"),
            "go.etcd.io/etcd/server/v3",
        ],
        src,
    )


def build_kwok(go: GoBuild, versions: Versions, out: Path) -> None:
    src = version_dir(versions) / "src" / "kwok"
    src.mkdir(parents=True, exist_ok=True)
    go.run(
        "kwok",
        ["install", "-trimpath", "-ldflags", "-s -w", f"sigs.k8s.io/kwok/cmd/kwok@{versions.kwok}"],
        src,
        {"GOBIN": str(out)},
    )
    module = go.download("kwok", f"sigs.k8s.io/kwok@{versions.kwok}", src)
    stages = [(Path(module["Dir"]) / name).read_text() for name in KWOK_STAGE_FILES]
    kwok_stages_file(versions).write_text("\n---\n".join(stages))


BUILDERS = {
    "kubernetes": (build_kubernetes, KUBERNETES_COMMANDS, lambda v: v.kubernetes),
    "etcd": (build_etcd, ("etcd",), lambda v: v.etcd),
    "kwok": (build_kwok, ("kwok",), lambda v: v.kwok),
}


def stamp(versions: Versions, component: str) -> Path:
    return bin_dir(versions) / f".{component}"


def is_built(versions: Versions, component: str) -> bool:
    _, binaries, version_of = BUILDERS[component]
    marker = stamp(versions, component)
    return (
        marker.is_file()
        and marker.read_text().strip() == version_of(versions)
        and all((bin_dir(versions) / name).is_file() for name in binaries)
    )


def missing(versions: Versions = PINNED) -> list[str]:
    return [component for component in BUILDERS if not is_built(versions, component)]


@contextmanager
def build_lock(versions: Versions) -> Iterator[None]:
    """One build of a version at a time: a second `up` waits for the first one's build."""
    version_dir(versions).mkdir(parents=True, exist_ok=True)
    with (version_dir(versions) / "build.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def ensure_built(log: Path, versions: Versions = PINNED) -> Path:
    """The bin directory, after building whatever is missing or at another version."""
    go_path = go_command()
    if go_path is None:
        raise ComponentError("build", "the go command is not installed (Go 1.26 is needed)")
    if not missing(versions):
        return bin_dir(versions)
    log.parent.mkdir(parents=True, exist_ok=True)
    with build_lock(versions):
        go = GoBuild(go_path, cache_root(), log)
        for component in missing(versions):
            builder, binaries, version_of = BUILDERS[component]
            # Built into a scratch directory and moved in whole: a build that stopped
            # half-way leaves no binary that looks current.
            scratch = Path(tempfile.mkdtemp(prefix=f".{component}-", dir=version_dir(versions)))
            try:
                builder(go, versions, scratch)
                bin_dir(versions).mkdir(exist_ok=True)
                for name in binaries:
                    (scratch / name).replace(bin_dir(versions) / name)
                stamp(versions, component).write_text(version_of(versions) + "\n")
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
    return bin_dir(versions)
