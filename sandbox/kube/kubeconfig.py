"""A kubeconfig for the sandbox: one cluster, one user with a dummy token, context ``sandbox``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

CONTEXT = "sandbox"
TOKEN = "sandbox-token"  # the sandbox accepts any token; clients just need one to send


def kubeconfig(server: str, namespace: str = "default") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": CONTEXT, "cluster": {"server": server}}],
        "users": [{"name": CONTEXT, "user": {"token": TOKEN}}],
        "contexts": [
            {
                "name": CONTEXT,
                "context": {"cluster": CONTEXT, "user": CONTEXT, "namespace": namespace},
            }
        ],
        "current-context": CONTEXT,
        "preferences": {},
    }


def write_kubeconfig(path: str | Path, server: str, namespace: str = "default") -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(yaml.safe_dump(kubeconfig(server, namespace), sort_keys=False))
    tmp.chmod(0o600)
    tmp.replace(path)  # readers never see a half-written file
    return path
