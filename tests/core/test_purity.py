"""The core is sans-I/O: nothing under freight._core imports clocks, threads or asyncio."""

from __future__ import annotations

import ast
from pathlib import Path

import freight._core

FORBIDDEN = {"asyncio", "threading", "time", "random", "socket", "concurrent", "selectors"}
CORE = Path(freight._core.__file__).parent
SRC = CORE.parent


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_core_imports_no_io() -> None:
    for path in CORE.glob("*.py"):
        roots = {name.split(".")[0] for name in imported_modules(path)}
        assert not roots & FORBIDDEN, f"{path.name} imports {roots & FORBIDDEN}"
        inner = {n for n in imported_modules(path) if n.startswith("freight.")}
        assert all(n.startswith(("freight._core", "freight._errors")) for n in inner), inner


def test_layers_point_downward() -> None:
    for path in SRC.rglob("*.py"):
        if path.parent.name in ("cli", "api"):
            continue
        for name in imported_modules(path):
            assert not name.startswith(("freight.cli", "freight.api")), (path, name)
        if path.parent.name == "_drivers":
            assert "freight._batched" not in imported_modules(path)
        if path.parent.name == "connectors":
            assert not any(n.startswith("freight.jobs") for n in imported_modules(path)), path
