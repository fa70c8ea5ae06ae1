"""``canary sandbox``: run the emulated cluster, or only its mesh, in the foreground.

Without ``--cluster``, starts the sandbox with BookInfo preloaded, waits until its
Deployments are ready, writes a kubeconfig for it and prints its addresses, one per line::

    api        http://127.0.0.1:PORT
    ingress    http://127.0.0.1:PORT
    metrics    http://127.0.0.1:PORT/metrics
    kubeconfig /abs/path/.runtime/sandbox.kubeconfig

With ``--cluster KUBECONFIG``, runs only the mesh (traffic simulator, ingress, Istio's
metrics) against the API server of that kubeconfig (``sandbox.mesh_on_cluster``), and
prints::

    cluster    https://127.0.0.1:6443
    ingress    http://127.0.0.1:PORT
    metrics    http://127.0.0.1:PORT/metrics
    watching   deployments services virtualservices destinationrules
    skipped    httproutes (not served)

SIGINT or SIGTERM stops it cleanly (exit 0). Bad flags or inputs: one line, exit 2; a
cluster that cannot be reached or listed: one line, exit 1.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sandbox.emulated import Sandbox
    from sandbox.mesh_on_cluster import MeshOnCluster

DEFAULT_KUBECONFIG = Path(".runtime") / "sandbox.kubeconfig"
BAD_INPUT = 2
ERROR = 1
# Flags of the emulated API server and its controller, which --cluster does not run.
EMULATED_ONLY = ("kubeconfig", "api_port", "startup_delay", "istio_crds")


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise _UsageError(message)


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise ValueError(text)
    return value


_port.__name__ = "port"  # argparse names the type in its error message


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="canary sandbox",
        description="Run the emulated Kubernetes + Istio sandbox on 127.0.0.1, or only its "
        "mesh against a cluster (--cluster).",
    )
    parser.add_argument(
        "--scenario",
        default="healthy",
        metavar="NAME|FILE",
        help="built-in scenario (healthy, faulty, slow, unready) or a YAML file",
    )
    parser.add_argument(
        "--cluster",
        type=Path,
        default=None,
        metavar="KUBECONFIG",
        help="run only the mesh, routing by this cluster's objects (list + watch)",
    )
    parser.add_argument(
        "--context", default=None, metavar="NAME", help="with --cluster: the kubeconfig context"
    )
    parser.add_argument(
        "--kubeconfig",
        type=Path,
        default=None,
        metavar="PATH",
        help=f"where to write the kubeconfig (default: {DEFAULT_KUBECONFIG})",
    )
    parser.add_argument(
        "--namespace",
        default=None,
        help="namespace of BookInfo (with --cluster: the one watched; default: the "
        "context's, else default)",
    )
    parser.add_argument("--api-port", type=_port, default=None, metavar="N")
    parser.add_argument("--ingress-port", type=_port, default=0, metavar="N")
    parser.add_argument("--metrics-port", type=_port, default=0, metavar="N")
    parser.add_argument("--seed", type=int, default=None, metavar="N")
    parser.add_argument(
        "--rps",
        type=float,
        default=50.0,
        metavar="N",
        help="simulated requests per second to reviews (default: 50)",
    )
    parser.add_argument(
        "--startup-delay",
        type=float,
        default=None,
        metavar="SECONDS",
        help="start-up delay of every version, instead of the scenario's",
    )
    parser.add_argument(
        "--istio-crds",
        default=None,
        metavar="FILE",
        help="validate Istio objects against this CRD file instead of the built-in schema",
    )
    parser.add_argument(
        "--chaos",
        default=None,
        metavar="SPEC",
        help="inject faults, e.g. seed=1,api-500=0.05,flap=0.2 (see docs/sandbox.md)",
    )
    parser.add_argument(
        "--extra-services",
        default="",
        metavar="NAMES",
        help="more services like BookInfo's, comma-separated (the simulated traffic calls "
        "them too; with --cluster they must exist there)",
    )
    return parser


def sandbox_main(argv: Sequence[str]) -> int:
    try:
        args = _parser().parse_args(list(argv))
        if args.rps < 0 or (args.startup_delay is not None and args.startup_delay < 0):
            raise _UsageError("--rps and --startup-delay cannot be negative")
        if args.istio_crds and not Path(args.istio_crds).is_file():
            raise _UsageError(f"--istio-crds: no such file: {args.istio_crds}")
        extra = [name.strip() for name in args.extra_services.split(",") if name.strip()]
        if args.cluster is not None:
            return _run_mesh(_mesh_on_cluster(args, extra))
        if args.context is not None:
            raise _UsageError("--context: only with --cluster")
        box = _sandbox(args, extra)
        kubeconfig = args.kubeconfig or DEFAULT_KUBECONFIG
    except (_UsageError, ValueError, OSError) as exc:
        print(f"canary sandbox: error: {exc}", file=sys.stderr)
        return BAD_INPUT
    return _run(box, kubeconfig)


def _sandbox(args: argparse.Namespace, extra: list[str]) -> Sandbox:
    from sandbox.chaos import Chaos
    from sandbox.emulated import Sandbox  # the heavy imports only once the flags are good

    chaos = Chaos(args.chaos) if args.chaos else None
    return Sandbox(
        args.scenario,
        namespace=args.namespace or "default",
        api_port=args.api_port or 0,
        ingress_port=args.ingress_port,
        metrics_port=args.metrics_port,
        seed=args.seed,
        rps=args.rps,
        startup_delay_s=args.startup_delay,
        istio_crds=args.istio_crds,
        chaos=chaos,
        extra_services=extra,
    )


def _mesh_on_cluster(args: argparse.Namespace, extra: list[str]) -> MeshOnCluster:
    given = [name for name in EMULATED_ONLY if getattr(args, name) is not None]
    if given:
        flag = "--" + given[0].replace("_", "-")
        raise _UsageError(f"{flag}: not with --cluster (it is the emulated API server's)")
    if not args.cluster.is_file():
        raise _UsageError(f"--cluster: no such file: {args.cluster}")
    from sandbox.mesh_on_cluster import MeshOnCluster

    return MeshOnCluster(
        args.cluster,
        context=args.context,
        namespace=args.namespace,
        scenario=args.scenario,
        rps=args.rps,
        seed=args.seed,
        ingress_port=args.ingress_port,
        metrics_port=args.metrics_port,
        chaos=args.chaos,
        services=["reviews", *extra],
    )


def _run(box: Sandbox, kubeconfig: Path) -> int:
    stop = threading.Event()
    _on_signals(stop)
    try:
        box.start()
    except OSError as exc:  # e.g. a port already in use
        print(f"canary sandbox: error: {exc}", file=sys.stderr)
        return ERROR
    try:
        if not box.wait_ready(timeout=30):
            print("canary sandbox: warning: BookInfo is not ready yet", file=sys.stderr)
        path = box.write_kubeconfig(kubeconfig).resolve()
        print(f"api        {box.api_url}", flush=True)
        print(f"ingress    {box.ingress_url}", flush=True)
        print(f"metrics    {box.metrics_url}", flush=True)
        print(f"kubeconfig {path}", flush=True)
        if box.chaos is not None:
            print(f"chaos      {box.chaos.describe()}", flush=True)
        _wait(stop)
    finally:
        box.stop()
    return 0


def _run_mesh(mesh: MeshOnCluster) -> int:
    from sandbox.mesh_on_cluster import KubeconfigError

    stop = threading.Event()
    _on_signals(stop)
    try:
        mesh.start()
    except KubeconfigError as exc:
        print(f"canary sandbox: error: --cluster: {exc}", file=sys.stderr)
        return BAD_INPUT
    except OSError as exc:  # the cluster unreachable or refusing, a port in use
        print(f"canary sandbox: error: {exc}", file=sys.stderr)
        return ERROR
    try:
        print(f"cluster    {mesh.server}", flush=True)
        print(f"ingress    {mesh.ingress_url}", flush=True)
        print(f"metrics    {mesh.metrics_url}", flush=True)
        print(f"watching   {' '.join(mesh.watching)}", flush=True)
        if mesh.skipped:
            print(f"skipped    {' '.join(mesh.skipped)} (not served)", flush=True)
        _wait(stop)
    finally:
        mesh.stop()
    return 0


def _wait(stop: threading.Event) -> None:
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass


def _on_signals(stop: threading.Event) -> None:
    if threading.current_thread() is not threading.main_thread():
        return  # signal handlers can only be set from the main thread
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())


def main() -> None:
    sys.exit(sandbox_main(sys.argv[1:]))
