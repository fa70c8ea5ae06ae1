"""The layers: production code never imports the sandbox or the tests, the library never
imports the flows or the tasks, and no module imports itself round a circle."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PRODUCTION = ("canary", "flows", "tasks")
FORBIDDEN = ("sandbox", "tests", "bench")
LAYERS = {"canary": ("flows", "tasks"), "tasks": ("flows",)}  # package: what it must not import


def imported_modules(path: Path) -> list[str]:
    """Every module the file imports, at any depth (imports inside functions count too)."""
    modules = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            modules += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules.append(node.module)
            modules += [f"{node.module}.{alias.name}" for alias in node.names]
    return modules


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(packages: tuple[str, ...] = (*PRODUCTION, "sandbox")) -> dict[str, set[str]]:
    """module -> the project modules it imports, with the packages whose __init__ that runs.

    A module's own packages are left out: they are being imported already when it runs.
    """
    files = {module_name(p): p for pkg in packages for p in sorted((REPO / pkg).rglob("*.py"))}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        targets = set()
        for module in imported_modules(path):
            targets |= {m for m in _with_parents(module) if m in files and m != name}
        graph[name] = {t for t in targets if not name.startswith(f"{t}.")}
    return graph


def _with_parents(module: str) -> Iterator[str]:
    parts = module.split(".")
    for end in range(1, len(parts) + 1):
        yield ".".join(parts[:end])


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


@pytest.mark.parametrize("package", PRODUCTION)
def test_production_code_does_not_import_the_sandbox(package: str):
    files = sorted((REPO / package).rglob("*.py"))
    assert files, f"no sources under {package}/"
    wrong = [
        f"{path.relative_to(REPO)} imports {module}"
        for path in files
        for module in imported_modules(path)
        if module.split(".")[0] in FORBIDDEN
    ]
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("package", sorted(LAYERS))
def test_lower_layers_do_not_import_upper_ones(package: str):
    above = LAYERS[package]
    wrong = [
        f"{module} imports {target}"
        for module, targets in import_graph().items()
        if module.split(".")[0] == package
        for target in sorted(targets)
        if target.split(".")[0] in above
    ]
    assert not wrong, "\n".join(wrong)


def test_no_module_imports_itself_round_a_circle():
    found = circles(import_graph())
    assert not found, "\n".join(" <-> ".join(group) for group in found)


def test_the_circle_finder_finds_a_circle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert circles(graph) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []


@pytest.mark.parametrize("command", ["demo", "sandbox", "run"])
def test_commands_are_added_through_entry_points(command: str, capsys):
    from canary.cli import main

    plan = ["configs/bookinfo-reviews.yaml"] if command == "run" else []
    try:
        code = main([command, *plan, "--no-such-flag"])
    except SystemExit as exc:  # argparse's way out
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"canary {command}: error: unrecognized arguments: --no-such-flag"), err
