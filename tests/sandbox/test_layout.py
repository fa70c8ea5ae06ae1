"""The sandbox's two parts stand on their own, and one HTTP server base serves them all.

``sandbox/kube/`` (the emulated Kubernetes API) and ``sandbox/mesh/`` (the traffic part)
import neither each other nor the modules that tie them together; both may use the shared
HTTP server base. The mesh reads the cluster only through its view, which is what lets it
run against any API server.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SANDBOX = Path(__file__).resolve().parents[2] / "sandbox"
SHARED = {"sandbox.http_server"}


def sandbox_imports(path: Path) -> set[str]:
    """What a file imports from the sandbox, as dotted names: ``from sandbox.kube import
    store`` gives ``sandbox.kube.store``, ``from sandbox.kube.store import clone`` gives
    ``sandbox.kube.store.clone``."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return {name for name in found if name.split(".")[0] == "sandbox"}


@pytest.mark.parametrize("part", ["kube", "mesh"])
def test_each_part_imports_only_itself_and_the_http_base(part: str) -> None:
    files = sorted((SANDBOX / part).glob("*.py"))
    assert len(files) > 3, f"sources of sandbox/{part}/"
    wrong = [
        f"{path.relative_to(SANDBOX.parent)} imports {module}"
        for path in files
        for module in sorted(sandbox_imports(path))
        if not module.startswith((f"sandbox.{part}.", *(f"{m}." for m in SHARED)))
    ]
    assert not wrong, "\n".join(wrong)


def test_only_the_base_makes_http_servers() -> None:
    files = sorted(SANDBOX.rglob("*.py"))
    makers = [
        str(path.relative_to(SANDBOX.parent))
        for path in files
        if "ThreadingHTTPServer" in path.read_text()
    ]
    assert makers == ["sandbox/http_server.py"]
