"""The house's rules that a walk over the sources can check."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
#: What a deployed worker runs: the package without the local dev stack and the CLI (the CLI
#: provisions a laptop too: `infra`, `run`), and the arms.
RUNTIME_DIRS = [ROOT / "streams", ROOT / "arms"]
NOT_RUNTIME = {ROOT / "streams" / "supervisor", ROOT / "streams" / "cli"}
DEV_STACK = "octollm.supervisor"


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """Every module `path` imports, anywhere in it (function-level imports included)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return found


def runtime_files() -> list[Path]:
    return [
        path
        for top in RUNTIME_DIRS
        for path in sorted(top.rglob("*.py"))
        if not any(path.is_relative_to(d) for d in NOT_RUNTIME)
    ]


def test_the_runtime_never_imports_the_dev_stack() -> None:
    files = runtime_files()
    assert len(files) > 50  # the walk sees the package, not an empty folder
    offenders = [
        f"{path.relative_to(ROOT)}:{line} imports {name}"
        for path in files
        for line, name in imported_modules(path)
        if name == DEV_STACK or name.startswith(DEV_STACK + ".")
    ]
    assert offenders == []


def test_the_walk_sees_an_import_inside_a_function(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from octollm.supervisor import kafka\n    return kafka\n")
    assert (2, "octollm.supervisor.kafka") in imported_modules(module)
