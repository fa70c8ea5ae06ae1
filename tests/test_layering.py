"""Production code (canary/, flows/, tasks/) never imports the sandbox or the tests."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PRODUCTION = ("canary", "flows", "tasks")
FORBIDDEN = ("sandbox", "tests", "bench")


def imported_modules(path: Path) -> list[str]:
    modules = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            modules += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules.append(node.module)
    return modules


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


@pytest.mark.parametrize("command", ["demo", "sandbox"])
def test_the_sandbox_adds_its_commands_through_entry_points(command: str, capsys):
    from canary.cli import main

    try:
        code = main([command, "--no-such-flag"])
    except SystemExit as exc:  # argparse's way out
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"canary {command}: error: unrecognized arguments: --no-such-flag"), err
