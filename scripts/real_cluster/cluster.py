"""`up DIR` and `down DIR`: the control plane's processes, kubeconfigs, CRDs and release RBAC.

DIR after `up`:
    admin.kubeconfig     system:masters, client certificate
    release.kubeconfig   the canary-release ServiceAccount's token (TokenRequest API)
    cluster.json         server URL, ports, versions, the fake Node, the release's namespaces
    pids/<component>.pid "<pid> <binary>" for each process `up` started
    logs/<component>.log each process's output (logs/build.log for a build)
    pki/, etcd/          certificates and keys made on the spot; etcd's data
"""

from __future__ import annotations

import base64
import json
import shutil
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import urllib3
import yaml
from kubernetes import client as k8s
from kubernetes import config, utils
from kubernetes.client.exceptions import ApiException

from real_cluster import build
from real_cluster.errors import ComponentError
from real_cluster.pki import Pki, make_pki
from real_cluster.processes import Component, free_port, start, stop, wait_for

REPO = Path(__file__).resolve().parents[2]
RELEASE_RBAC = REPO / "deploy" / "kubernetes" / "release-rbac.yaml"
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
SERVICE_CIDR = "10.0.0.0/24"
SERVICE_IP = "10.0.0.1"  # the `kubernetes` Service: an object only, no traffic goes there
ISSUER = "https://kubernetes.default.svc.cluster.local"
FAKE_NODE = "kwok-node-0"
KWOK_ANNOTATION = ("kwok.x-k8s.io/node", "fake")
TOKEN_SECONDS = 24 * 3600

# Seconds to wait, for a machine whose other core is busy.
START_TIMEOUT = {
    "etcd": 60,
    "kube-apiserver": 180,
    "kube-controller-manager": 120,
    "kube-scheduler": 120,
    "kwok": 120,
}
READY_TIMEOUT = 120


@dataclass(frozen=True)
class Ports:
    etcd_client: int
    etcd_peer: int
    apiserver: int
    controller_manager: int
    scheduler: int
    kwok: int

    @classmethod
    def pick(cls) -> Ports:
        return cls(*(free_port() for _ in range(6)))


def component(directory: Path, name: str) -> Component:
    return Component(name, directory)


def running_components(directory: Path) -> list[str]:
    return [name for name in COMPONENTS if component(directory, name).running()]


# --- kubeconfigs -------------------------------------------------------------------------


def b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def kubeconfig(
    server: str, ca: Path, name: str, user: dict[str, str], namespace: str | None = None
) -> dict[str, Any]:
    context: dict[str, str] = {"cluster": "canary-real-cluster", "user": name}
    if namespace:
        context["namespace"] = namespace
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "canary-real-cluster",
                "cluster": {"server": server, "certificate-authority-data": b64(ca)},
            }
        ],
        "users": [{"name": name, "user": user}],
        "contexts": [{"name": name, "context": context}],
        "current-context": name,
    }


def certificate_user(cert: Path, key: Path) -> dict[str, str]:
    return {"client-certificate-data": b64(cert), "client-key-data": b64(key)}


def write_yaml(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    path.chmod(0o600)
    return path


# --- readiness probes --------------------------------------------------------------------


def answers(url: str, context: ssl.SSLContext | None = None, expect: bytes | None = None) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5, context=context) as response:
            return response.status == 200 and (expect is None or expect in response.read())
    except (urllib.error.URLError, OSError, ssl.SSLError):
        return False


def admin_tls(pki: Pki) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki.ca.cert))
    context.load_cert_chain(str(pki.admin.cert), str(pki.admin.key))
    return context


def self_signed_tls() -> ssl.SSLContext:
    # The controller-manager and the scheduler serve /healthz with a certificate they make
    # themselves; only whether they answer on 127.0.0.1 matters here.
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


# --- the processes -----------------------------------------------------------------------


def etcd_argv(bin_dir: Path, directory: Path, ports: Ports) -> list[str]:
    client, peer = f"http://127.0.0.1:{ports.etcd_client}", f"http://127.0.0.1:{ports.etcd_peer}"
    return [
        str(bin_dir / "etcd"),
        "--name=canary",
        f"--data-dir={directory / 'etcd'}",
        f"--listen-client-urls={client}",
        f"--advertise-client-urls={client}",
        f"--listen-peer-urls={peer}",
        f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster=canary={peer}",
        "--log-level=warn",
        "--unsafe-no-fsync",
    ]  # a throw-away store: no fsync on a disk others share


def apiserver_argv(bin_dir: Path, directory: Path, ports: Ports, pki: Pki) -> list[str]:
    return [
        str(bin_dir / "kube-apiserver"),
        f"--etcd-servers=http://127.0.0.1:{ports.etcd_client}",
        "--bind-address=127.0.0.1",
        "--advertise-address=127.0.0.1",
        f"--secure-port={ports.apiserver}",
        f"--cert-dir={directory / 'pki'}",
        f"--tls-cert-file={pki.apiserver.cert}",
        f"--tls-private-key-file={pki.apiserver.key}",
        f"--client-ca-file={pki.ca.cert}",
        "--authorization-mode=Node,RBAC",
        f"--service-account-issuer={ISSUER}",
        f"--service-account-key-file={pki.service_account_public}",
        f"--service-account-signing-key-file={pki.service_account_key}",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        # Endpoints may not name a loopback address, so the `kubernetes` Service's
        # endpoints are not reconciled (nothing here reaches the API through it).
        "--endpoint-reconciler-type=none",
        # An aggregation front proxy is trusted by name only, and none is issued a
        # certificate; set, so the controllers find the CA bundle they look up at start.
        f"--requestheader-client-ca-file={pki.ca.cert}",
        "--requestheader-allowed-names=front-proxy-client",
        "--requestheader-username-headers=X-Remote-User",
        "--requestheader-group-headers=X-Remote-Group",
        "--requestheader-extra-headers-prefix=X-Remote-Extra-",
        "--profiling=false",
    ]


def controller_argv(
    bin_dir: Path,
    name: str,
    kubeconfig_file: Path,
    port: int,
    directory: Path,
    extra: Iterable[str],
) -> list[str]:
    return [
        str(bin_dir / name),
        f"--kubeconfig={kubeconfig_file}",
        f"--authentication-kubeconfig={kubeconfig_file}",
        f"--authorization-kubeconfig={kubeconfig_file}",
        "--bind-address=127.0.0.1",
        f"--secure-port={port}",
        f"--cert-dir={directory / 'pki' / name}",
        "--leader-elect=false",
        *extra,
    ]


def kwok_argv(bin_dir: Path, admin: Path, ports: Ports) -> list[str]:
    key, value = KWOK_ANNOTATION
    return [
        str(bin_dir / "kwok"),
        f"--kubeconfig={admin}",
        f"--config={build.kwok_stages_file()}",
        "--manage-all-nodes=false",
        f"--manage-nodes-with-annotation-selector={key}={value}",
        f"--server-address=127.0.0.1:{ports.kwok}",
        "--node-ip=127.0.0.1",
        "--node-lease-duration-seconds=40",
    ]


@dataclass
class Starter:
    """Starts components in order; remembers them so a failed `up` can stop them all."""

    directory: Path
    started: list[Component]

    def run(self, name: str, argv: list[str], ready: Callable[[], bool]) -> None:
        part = component(self.directory, name)
        process = start(part, argv)
        self.started.append(part)
        wait_for(part, process, ready, START_TIMEOUT[name], "ready")


# --- objects in the cluster --------------------------------------------------------------


def api_client(kubeconfig_file: Path) -> Any:
    return config.new_client_from_config(config_file=str(kubeconfig_file))


def api_failure(what: str, error: Exception) -> ComponentError:
    """The API server's own message for a refused request, as `kubectl` would show it."""
    cause = str(error)
    if isinstance(error, ApiException):
        try:
            cause = f"{error.status} {json.loads(error.body)['message']}"
        except (TypeError, ValueError, KeyError):
            cause = f"{error.status} {error.reason}"
    return ComponentError("kube-apiserver", f"{what}: {cause}")


def fake_node() -> dict[str, Any]:
    key, value = KWOK_ANNOTATION
    resources = {"cpu": "32", "memory": "256Gi", "pods": "110"}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": FAKE_NODE,
            "annotations": {key: value},
            "labels": {
                "kubernetes.io/hostname": FAKE_NODE,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "type": "kwok",
            },
        },
        "status": {"allocatable": resources, "capacity": resources},
    }


def node_ready(client: Any) -> bool:
    try:
        node = k8s.CoreV1Api(client).read_node(FAKE_NODE)
    except (ApiException, urllib3.exceptions.HTTPError):  # not there yet, or still settling
        return False
    conditions = node.status.conditions or []
    return any(c.type == "Ready" and c.status == "True" for c in conditions) and not any(
        taint.key.startswith("node.kubernetes.io/") for taint in node.spec.taints or []
    )


def yaml_documents(path: Path) -> list[dict[str, Any]]:
    try:
        return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    except (OSError, yaml.YAMLError) as error:
        raise ComponentError("manifests", f"{path}: {error}") from error


def create(client: Any, document: dict[str, Any], source: str) -> None:
    what = f"{source}: {document.get('kind')} {document.get('metadata', {}).get('name')}"
    try:
        utils.create_from_dict(client, document)
    except utils.FailToCreateError as failure:
        raise api_failure(what, failure.api_exceptions[0]) from failure
    except ApiException as error:
        raise api_failure(what, error) from error


def crd_established(client: Any, name: str) -> bool:
    crd = k8s.ApiextensionsV1Api(client).read_custom_resource_definition(name)
    return any(
        c.type == "Established" and c.status == "True" for c in (crd.status.conditions or [])
    )


def apply_crds(client: Any, files: Iterable[Path], apiserver: Component) -> list[str]:
    names = []
    for path in files:
        for document in yaml_documents(path):
            if document.get("kind") != "CustomResourceDefinition":
                continue
            create(client, document, str(path))
            names.append(document["metadata"]["name"])
    for name in names:
        wait_for(
            apiserver,
            None,
            lambda name=name: crd_established(client, name),
            READY_TIMEOUT,
            f"serving CRD {name}",
        )
    return names


@dataclass(frozen=True)
class ReleaseIdentity:
    service_account: str
    namespace: str  # the ServiceAccount's
    release_namespaces: list[str]  # where its Roles grant something


def release_identity(documents: list[dict[str, Any]]) -> ReleaseIdentity:
    accounts = [d["metadata"] for d in documents if d.get("kind") == "ServiceAccount"]
    roles = [d["metadata"] for d in documents if d.get("kind") == "Role"]
    if len(accounts) != 1 or not roles:
        raise ComponentError(
            "manifests",
            f"{RELEASE_RBAC} should hold one ServiceAccount and "
            f"its Roles; found {len(accounts)} and {len(roles)}",
        )
    return ReleaseIdentity(
        accounts[0]["name"],
        accounts[0].get("namespace", "default"),
        sorted({role.get("namespace", "default") for role in roles}),
    )


def ensure_namespaces(client: Any, names: Iterable[str]) -> None:
    core = k8s.CoreV1Api(client)
    for name in sorted(set(names)):
        try:
            core.read_namespace(name)
        except ApiException as missing:
            if missing.status != 404:
                raise api_failure(f"namespace {name}", missing) from missing
            core.create_namespace({"metadata": {"name": name}})


def release_token(client: Any, identity: ReleaseIdentity) -> str:
    request = k8s.AuthenticationV1TokenRequest(
        spec=k8s.V1TokenRequestSpec(audiences=[], expiration_seconds=TOKEN_SECONDS)
    )
    try:
        answer = k8s.CoreV1Api(client).create_namespaced_service_account_token(
            identity.service_account, identity.namespace, request
        )
    except ApiException as error:
        raise api_failure(f"TokenRequest for {identity.service_account}", error) from error
    return answer.status.token


def set_up_release(client: Any, directory: Path, server: str, ca: Path) -> ReleaseIdentity:
    """The release's ServiceAccount, Role and RoleBinding as the file has them; its kubeconfig."""
    documents = yaml_documents(RELEASE_RBAC)
    identity = release_identity(documents)
    namespaces = [d["metadata"].get("namespace", "default") for d in documents]
    ensure_namespaces(client, namespaces)
    for document in documents:
        create(client, document, str(RELEASE_RBAC))
    token = release_token(client, identity)
    write_yaml(
        directory / "release.kubeconfig",
        kubeconfig(
            server, ca, identity.service_account, {"token": token}, identity.release_namespaces[0]
        ),
    )
    return identity


# --- up and down -------------------------------------------------------------------------


def fresh_directory(directory: Path) -> None:
    if running := running_components(directory):
        raise ComponentError(
            "up",
            f"{directory} already has a running cluster ({', '.join(running)}); run `down` first",
        )
    for stale in ("etcd", "pki", "pids", "logs"):
        shutil.rmtree(directory / stale, ignore_errors=True)
    for stale in ("admin.kubeconfig", "release.kubeconfig", "cluster.json"):
        (directory / stale).unlink(missing_ok=True)
    (directory / "logs").mkdir(parents=True)


def up(directory: Path, crd_files: list[Path]) -> dict[str, Any]:
    directory = directory.resolve()
    directory.mkdir(parents=True, exist_ok=True)
    fresh_directory(directory)
    for path in crd_files:
        if not path.is_file():
            raise ComponentError("CRDS", f"no such file: {path}")
    bin_dir = build.ensure_built(directory / "logs" / "build.log")
    starter = Starter(directory, [])
    try:
        return start_cluster(directory, bin_dir, crd_files, starter)
    except BaseException:
        for part in reversed(starter.started):
            stop(part)
        raise


def start_cluster(
    directory: Path, bin_dir: Path, crd_files: list[Path], starter: Starter
) -> dict[str, Any]:
    ports = Ports.pick()
    pki = make_pki(directory / "pki", SERVICE_IP, directory / "logs" / "certificates.log")
    server = f"https://127.0.0.1:{ports.apiserver}"

    starter.run(
        "etcd",
        etcd_argv(bin_dir, directory, ports),
        lambda: answers(f"http://127.0.0.1:{ports.etcd_client}/health", expect=b'"health":"true"'),
    )
    tls = admin_tls(pki)
    starter.run(
        "kube-apiserver",
        apiserver_argv(bin_dir, directory, ports, pki),
        lambda: answers(f"{server}/readyz", tls),
    )

    admin = write_yaml(
        directory / "admin.kubeconfig",
        kubeconfig(
            server, pki.ca.cert, "canary-admin", certificate_user(pki.admin.cert, pki.admin.key)
        ),
    )
    manager = write_yaml(
        directory / "pki" / "controller-manager.kubeconfig",
        kubeconfig(
            server,
            pki.ca.cert,
            "kube-controller-manager",
            certificate_user(pki.controller_manager.cert, pki.controller_manager.key),
        ),
    )
    scheduler = write_yaml(
        directory / "pki" / "scheduler.kubeconfig",
        kubeconfig(
            server,
            pki.ca.cert,
            "kube-scheduler",
            certificate_user(pki.scheduler.cert, pki.scheduler.key),
        ),
    )

    insecure = self_signed_tls()
    # The later components' ports are picked again just before each starts: a port picked
    # at the beginning may have been taken meanwhile by another process of a busy machine.
    ports = replace(ports, controller_manager=free_port())
    starter.run(
        "kube-controller-manager",
        controller_argv(
            bin_dir,
            "kube-controller-manager",
            manager,
            ports.controller_manager,
            directory,
            [
                f"--service-account-private-key-file={pki.service_account_key}",
                f"--root-ca-file={pki.ca.cert}",
                "--use-service-account-credentials=true",
                f"--cluster-signing-cert-file={pki.ca.cert}",
                f"--cluster-signing-key-file={pki.ca.key}",
            ],
        ),
        lambda: answers(f"https://127.0.0.1:{ports.controller_manager}/healthz", insecure),
    )
    ports = replace(ports, scheduler=free_port())
    starter.run(
        "kube-scheduler",
        controller_argv(bin_dir, "kube-scheduler", scheduler, ports.scheduler, directory, []),
        lambda: answers(f"https://127.0.0.1:{ports.scheduler}/healthz", insecure),
    )
    ports = replace(ports, kwok=free_port())
    starter.run(
        "kwok",
        kwok_argv(bin_dir, admin, ports),
        lambda: answers(f"http://127.0.0.1:{ports.kwok}/healthz"),
    )

    client = api_client(admin)
    apiserver = component(directory, "kube-apiserver")
    create(client, fake_node(), "the fake Node")
    wait_for(
        component(directory, "kwok"),
        None,
        lambda: node_ready(client),
        READY_TIMEOUT,
        f"reporting Node {FAKE_NODE} Ready",
    )
    crds = apply_crds(client, crd_files, apiserver)
    identity = set_up_release(client, directory, server, pki.ca.cert)

    summary = {
        "server": server,
        "ports": asdict(ports),
        "versions": asdict(build.PINNED),
        "node": FAKE_NODE,
        "crds": crds,
        "release": asdict(identity),
        "started": time.time(),
    }
    (directory / "cluster.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def down(directory: Path) -> list[str]:
    """Stops what `up DIR` started, last started first; the names of those that were running."""
    directory = directory.resolve()
    return [name for name in reversed(COMPONENTS) if stop(component(directory, name))]
