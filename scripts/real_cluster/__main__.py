"""`python -m real_cluster build|up DIR|down DIR` (scripts/real-cluster.sh is the way in)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from real_cluster import build, cluster
from real_cluster.errors import ComponentError


def parser() -> argparse.ArgumentParser:
    commands = argparse.ArgumentParser(
        prog="real-cluster.sh",
        description="A real Kubernetes control plane on 127.0.0.1 for the tests.",
    )
    verbs = commands.add_subparsers(dest="command", required=True)
    verbs.add_parser("build", help="build the binaries unless they are cached")
    up = verbs.add_parser("up", help="start a cluster in DIR; CRDS='file ...' are applied")
    up.add_argument("directory", metavar="DIR", type=Path)
    down = verbs.add_parser("down", help="stop the cluster `up DIR` started")
    down.add_argument("directory", metavar="DIR", type=Path)
    return commands


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        if args.command == "build":
            log = build.version_dir() / "build.log"
            if missing := build.missing():
                print(
                    f"real-cluster.sh build: building {', '.join(missing)} at "
                    f"{build.PINNED} (log: {log})",
                    file=sys.stderr,
                    flush=True,
                )
            print(f"real-cluster.sh build: binaries in {build.ensure_built(log)}")
        elif args.command == "up":
            crds = [Path(name) for name in os.environ.get("CRDS", "").split()]
            summary = cluster.up(args.directory, crds)
            print(
                f"real-cluster.sh up: {summary['server']} "
                f"(kubeconfigs in {args.directory.resolve()})"
            )
        else:
            stopped = cluster.down(args.directory)
            print(f"real-cluster.sh down: stopped {', '.join(stopped) or 'nothing'}")
    except ComponentError as error:
        print(f"real-cluster.sh {args.command}: {error.line()}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"real-cluster.sh {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
