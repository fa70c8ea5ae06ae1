"""The mesh alone against an API server it only knows by its kubeconfig.

The API server is the sandbox's own emulated one, started as a separate process
(``python -m sandbox``): the mesh reaches it exactly as it would reach a real cluster, by
list and watch through the official client, and the objects are changed the way the
pipeline changes them, through the client too.
"""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, config
from prometheus_client.parser import text_string_to_metric_families

from sandbox import bookinfo, mesh_on_cluster
from sandbox.cli import sandbox_main
from sandbox.kube.apiserver import ApiServer
from sandbox.kube.kubeconfig import write_kubeconfig
from sandbox.kube.store import ObjectStore
from sandbox.mesh.watch_cache import ClusterUnavailable, WatchCache
from tests.sandbox.conftest import REPO
from tests.support.mesh_objects import dest, destination_rule, header_vs, split_vs
from tests.support.waiting import wait_until

ISTIO = ("networking.istio.io", "v1", "default")
SUBSETS = {v: {"version": v} for v in ("v1", "v2")}
TIMEOUT = 30  # generous: the machine may be busy


# ----------------------------------------------------------------------------- helpers
def read_lines(stream: Any, count: int, timeout: float) -> list[str]:
    """The first ``count`` lines a process prints (fewer if it ends or the time is up)."""
    lines: list[str] = []

    def read() -> None:
        while len(lines) < count and (line := stream.readline()):
            lines.append(line.rstrip("\n"))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout)
    return list(lines)


class Process:
    """A ``python -m sandbox ...`` process and the addresses it printed."""

    def __init__(self, argv: list[str], lines: int) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sandbox", *argv],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        printed = read_lines(self.proc.stdout, lines, timeout=60)
        self.urls = dict(line.split(maxsplit=1) for line in printed)
        if len(printed) < lines:
            self.stop()
            raise AssertionError(f"python -m sandbox {' '.join(argv)} printed {printed}")

    def stop(self) -> tuple[int, str]:
        """SIGTERM; the exit code and what it wrote to stderr."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        _, err = self.proc.communicate()  # also closes the pipes
        return code, err


@pytest.fixture
def emulated(tmp_path: Path) -> Iterator[Callable[..., tuple[Path, Process]]]:
    """Start the emulated cluster in a process of its own; its kubeconfig and process."""
    started: list[Process] = []

    def start(*flags: str) -> tuple[Path, Process]:
        kubeconfig = tmp_path / f"emulated-{len(started)}.kubeconfig"
        started.append(
            Process(
                [
                    "--kubeconfig",
                    str(kubeconfig),
                    "--seed",
                    "1",
                    "--startup-delay",
                    "0.2",
                    "--rps",
                    "5",
                    *flags,
                ],
                lines=4,
            )
        )
        return kubeconfig, started[-1]

    yield start
    for process in started:
        process.stop()


@pytest.fixture
def mesh_of(
    emulated: Callable[..., tuple[Path, Process]],
) -> Iterator[Callable[..., mesh_on_cluster.MeshOnCluster]]:
    """The mesh, in this process, against a freshly started emulated cluster."""
    running: list[mesh_on_cluster.MeshOnCluster] = []

    def start(*flags: str) -> mesh_on_cluster.MeshOnCluster:
        kubeconfig, _ = emulated(*flags)
        running.append(mesh_on_cluster.run(kubeconfig, seed=3, rps=50))
        return running[-1]

    yield start
    for mesh in running:
        mesh.stop()


def kube(kubeconfig: Path | str) -> client.ApiClient:
    return config.new_client_from_config(config_file=str(kubeconfig))


def get(ingress_url: str, path: str = "/reviews/0") -> tuple[int, str]:
    """One request through the ingress: the status and the workload that served it."""
    request = urllib.request.Request(f"{ingress_url}{path}", headers={"Host": "reviews"})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, answer.headers.get("x-served-by", "")
    except urllib.error.HTTPError as error:
        error.close()
        return error.code, ""


def served_by(ingress_url: str, count: int = 20) -> Counter[str]:
    return Counter(
        workload or str(status) for status, workload in (get(ingress_url) for _ in range(count))
    )


def requests_total(metrics_url: str, **labels: str) -> float:
    """The sum of the exported istio_requests_total over the series with these labels."""
    with urllib.request.urlopen(metrics_url, timeout=10) as answer:
        text = answer.read().decode()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "istio_requests_total"
        and all(sample.labels.get(k) == v for k, v in labels.items())
    )


def debug(metrics_url: str, view: str) -> Any:
    with urllib.request.urlopen(
        metrics_url.replace("/metrics", f"/debug/{view}"), timeout=10
    ) as answer:
        return json.loads(answer.read())


def apply_canary(api: client.ApiClient, scenario_vs: dict[str, Any]) -> None:
    """reviews-v2, the DestinationRule with v1 and v2, and a VirtualService."""
    client.AppsV1Api(api).create_namespaced_deployment(
        "default", bookinfo.deployment("reviews", "default", "v2")
    )
    custom = client.CustomObjectsApi(api)
    custom.create_namespaced_custom_object(
        *ISTIO, "destinationrules", destination_rule("reviews", SUBSETS)
    )
    custom.create_namespaced_custom_object(*ISTIO, "virtualservices", scenario_vs)


def ready(api: client.ApiClient, name: str) -> bool:
    status = client.AppsV1Api(api).read_namespaced_deployment_status(name, "default").status
    return bool(status.ready_replicas)


# ------------------------------------------------------------------------------- tests
@pytest.mark.timeout(180)
def test_traffic_follows_a_virtual_service_changed_through_the_client(
    mesh_of: Callable[..., mesh_on_cluster.MeshOnCluster],
) -> None:
    mesh = mesh_of()
    with kube(mesh.kubeconfig) as api:
        apply_canary(api, split_vs(100, 0))
        wait_until(
            lambda: ready(api, "reviews-v2"),
            timeout=TIMEOUT,
            message="the server to report reviews-v2 ready",
        )
        wait_until(
            lambda: served_by(mesh.ingress_url) == {"reviews-v1": 20},
            timeout=TIMEOUT,
            message="the ingress to serve v1 only",
        )
        v2 = {"reporter": "destination", "destination_workload": "reviews-v2"}
        assert requests_total(mesh.metrics_url, **v2) == 0

        client.CustomObjectsApi(api).patch_namespaced_custom_object(
            *ISTIO,
            "virtualservices",
            "reviews",
            {"spec": {"http": [{"route": [dest("v1", 0), dest("v2", 100)]}]}},
        )

    wait_until(
        lambda: served_by(mesh.ingress_url) == {"reviews-v2": 20},
        timeout=TIMEOUT,
        message="the ingress to serve v2 only",
    )
    # The simulated users follow too, and only v2 counts their requests from now on.
    wait_until(
        lambda: mesh.simulator.split(0.5) == {"reviews-v2": 1.0},
        timeout=TIMEOUT,
        message="the simulated traffic to go to v2 only",
    )
    v1 = {"reporter": "destination", "destination_workload": "reviews-v1"}
    v1_before, v2_before = (
        requests_total(mesh.metrics_url, **v1),
        requests_total(mesh.metrics_url, **v2),
    )
    wait_until(
        lambda: requests_total(mesh.metrics_url, **v2) >= v2_before + 100,
        timeout=TIMEOUT,
        message="100 more requests counted for reviews-v2",
    )
    assert requests_total(mesh.metrics_url, **v1) == v1_before
    assert (
        requests_total(
            mesh.metrics_url,
            reporter="source",
            source_workload="istio-ingressgateway",
            destination_workload="reviews-v2",
        )
        >= 20
    )


@pytest.mark.timeout(180)
def test_readiness_is_the_one_the_server_reports(
    mesh_of: Callable[..., mesh_on_cluster.MeshOnCluster],
) -> None:
    mesh = mesh_of("--scenario", "unready")  # the server's controller: v2 never ready
    with kube(mesh.kubeconfig) as api:
        apply_canary(api, split_vs(0, 100))
        wait_until(
            lambda: (
                mesh.simulator.router.table().revision > 0
                and "default/reviews-v2" not in mesh.simulator.router.table().ready_workloads()
                and served_by(mesh.ingress_url, 5) == {"503": 5}
            ),
            timeout=TIMEOUT,
            message="v2's share to answer no healthy upstream",
        )
        assert not ready(api, "reviews-v2")
    uh = {"reporter": "source", "response_flags": "UH", "destination_workload": "unknown"}
    wait_until(
        lambda: requests_total(mesh.metrics_url, **uh) > 0,
        timeout=TIMEOUT,
        message="503 UH to be exported",
    )
    assert (
        requests_total(mesh.metrics_url, reporter="destination", destination_workload="reviews-v2")
        == 0
    )


@pytest.mark.timeout(180)
def test_routing_is_the_same_as_the_emulated_clusters(
    emulated: Callable[..., tuple[Path, Process]],
) -> None:
    kubeconfig, process = emulated()
    with mesh_on_cluster.run(kubeconfig, seed=3) as mesh, kube(kubeconfig) as api:
        apply_canary(api, header_vs())
        wait_until(
            lambda: ready(api, "reviews-v2"),
            timeout=TIMEOUT,
            message="the server to report reviews-v2 ready",
        )
        custom = client.CustomObjectsApi(api)
        vs = custom.get_namespaced_custom_object(*ISTIO, "virtualservices", "reviews")
        vs["spec"]["http"][1]["route"] = [dest("v1", 80), dest("v2", 20)]
        custom.replace_namespaced_custom_object(*ISTIO, "virtualservices", "reviews", vs)

        views: list[dict[str, Any]] = []

        def same() -> bool:
            emulated_view = debug(process.urls["metrics"], "routing")
            watched_view = json.loads(json.dumps(mesh.simulator.sample_routing(), default=str))
            for view in (emulated_view, watched_view):  # each counts its own revisions
                view.pop("revision")
                view["table"].pop("revision")
            views[:] = [emulated_view, watched_view]
            table = emulated_view["table"]
            final = (
                "weight" in json.dumps(table["virtualServiceRoutes"])
                and table["readyWorkloads"].get("default/reviews-v2") == 1
            )
            return final and emulated_view == watched_view

        wait_until(same, timeout=TIMEOUT, message="both modes to hold the same routing")
    expected = views[1]["expected"]["reviews"]
    assert expected["jason"] == {"reviews-v2": 1.0}
    assert expected["default"] == pytest.approx({"reviews-v1": 0.8, "reviews-v2": 0.2})


def test_the_cache_lists_again_after_410_gone_and_after_the_server_restarts(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = ObjectStore(history=20)  # a short history, so that watches soon fall behind it
    api = ApiServer(store).start()
    try:
        for plural, obj in bookinfo.objects("default"):
            api.create_object(plural, obj)
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", api.url)
        with kube(kubeconfig) as k8s, WatchCache(k8s, "default", watch_timeout_s=1) as cache:
            assert list(cache.watching) == [
                "deployments",
                "services",
                "virtualservices",
                "destinationrules",
                "httproutes",
            ]
            assert cache.skipped == []  # the emulated server serves the Gateway API too
            assert {s["metadata"]["name"] for s in cache.list("services")} == set(bookinfo.SERVICES)

            # Writes elsewhere push the history past the version each watch resumes from.
            listed = cache.lists["virtualservices"]
            for i in range(30):
                api.create_object(
                    "serviceaccounts", {"metadata": {"name": f"filler-{i}", "namespace": "default"}}
                )
            wait_until(
                lambda: cache.lists["virtualservices"] > listed,
                timeout=TIMEOUT,
                message="a list after 410 Gone",
            )
            api.create_object("virtualservices", split_vs(90, 10))
            wait_until(
                lambda: cache.list("virtualservices"),
                timeout=TIMEOUT,
                message="the new VirtualService in the cache",
            )

            # The server goes away; a DestinationRule appears while it is down.
            host, port = api.address
            api.stop()
            api = ApiServer(store, host=host, port=port)
            api.create_object("destinationrules", destination_rule("reviews", SUBSETS))
            wait_until(
                lambda: any(
                    r.levelno == logging.WARNING and "destinationrules" in r.getMessage()
                    for r in caplog.records
                ),
                timeout=TIMEOUT,
                message="the lost connection to be reported",
            )
            api.start()
            wait_until(
                lambda: cache.list("destinationrules"),
                timeout=TIMEOUT,
                message="the DestinationRule after the server came back",
            )
    finally:
        api.stop()
    assert all("Traceback" not in r.getMessage() for r in caplog.records)


def test_an_unreachable_server_is_one_clear_error(tmp_path: Path) -> None:
    api = ApiServer(ObjectStore())
    url = api.url
    api.stop()  # nothing listens there now
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", url)
    with pytest.raises(ClusterUnavailable) as caught:
        mesh_on_cluster.run(kubeconfig)
    message = str(caught.value)
    assert "cannot" in message and url.rsplit(":", 1)[1] in message and "\n" not in message


@pytest.mark.parametrize(
    ("flags", "code", "says"),
    [
        (["--cluster", "/no/such/kubeconfig"], 2, "--cluster: no such file"),
        (["--cluster", "{kubeconfig}", "--api-port", "8080"], 2, "--api-port: not with --cluster"),
        (["--cluster", "{kubeconfig}", "--kubeconfig", "x"], 2, "--kubeconfig: not with --cluster"),
        (["--cluster", "{kubeconfig}", "--chaos", "api-500=0.1"], 2, "api-500 needs the emulated"),
        (["--cluster", "{kubeconfig}", "--context", "nope"], 2, "no context named 'nope'"),
        (["--context", "sandbox"], 2, "--context: only with --cluster"),
        (["--cluster", "{kubeconfig}"], 1, "cannot"),  # nothing listens at its server
    ],
)
def test_bad_cluster_flags_are_one_line(
    flags: list[str], code: int, says: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    api = ApiServer(ObjectStore())
    url = api.url
    api.stop()
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", url)
    assert sandbox_main([f.format(kubeconfig=kubeconfig) for f in flags]) == code
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("canary sandbox: error: "), err
    assert says in err


@pytest.mark.timeout(180)
def test_the_command_runs_the_mesh_against_a_cluster_and_stops_on_sigterm(
    emulated: Callable[..., tuple[Path, Process]],
) -> None:
    kubeconfig, _ = emulated()
    mesh = Process(["--cluster", str(kubeconfig), "--seed", "4"], lines=4)
    try:
        # Nothing is skipped: the emulated server serves every kind the mesh watches.
        assert list(mesh.urls) == ["cluster", "ingress", "metrics", "watching"]
        assert (
            mesh.urls["cluster"]
            == yaml.safe_load(kubeconfig.read_text())["clusters"][0]["cluster"]["server"]
        )
        assert mesh.urls["watching"].split() == [
            "deployments",
            "services",
            "virtualservices",
            "destinationrules",
            "httproutes",
        ]
        assert get(mesh.urls["ingress"]) == (200, "reviews-v1")
        wait_until(
            lambda: (
                requests_total(
                    mesh.urls["metrics"], reporter="destination", destination_workload="reviews-v1"
                )
                > 0
            ),
            timeout=TIMEOUT,
            message="simulated traffic in the exported metrics",
        )
    finally:
        code, err = mesh.stop()
    assert code == 0 and "Traceback" not in err, err
