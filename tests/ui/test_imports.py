"""``ui/`` talks to the server over HTTP only: no torch, faiss or sqlite, and none of the packages
that bring them (core, trainer, indexer, server), neither imported directly nor pulled in (the syntax
check of every package's arrows is tests/test_imports.py)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

UI = Path(__file__).resolve().parents[2] / "ui"
BANNED = {"torch", "torchvision", "faiss", "sqlite3", "core", "trainer", "indexer", "server", "slotcon"}
FILES = sorted(UI.rglob("*.py"))


def imported_roots(path: Path) -> set[str]:
    """Top-level names of every module that ``path`` imports (absolute imports)."""
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", "")) in ("import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            roots.add(str(node.args[0].value).split(".")[0])
    return roots


def test_ui_has_python_files() -> None:
    names = {p.relative_to(UI).as_posix() for p in FILES}
    assert {
        "app.py",
        "client.py",
        "app_pages/concepts.py",
        "app_pages/image_slots.py",
        "app_pages/statistics.py",
        "app_pages/segmentation.py",
        "app_pages/training.py",
    } <= names


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.relative_to(UI).as_posix())
def test_no_banned_imports(path: Path) -> None:
    assert imported_roots(path) & BANNED == set()


def test_only_client_module_speaks_http() -> None:
    users = sorted(
        p.relative_to(UI).as_posix() for p in FILES if "httpx" in imported_roots(p) or "requests" in imported_roots(p)
    )
    assert users == ["client.py"]


def test_importing_every_ui_module_loads_no_torch() -> None:
    modules = [
        ".".join(p.relative_to(UI.parent).with_suffix("").parts)
        for p in FILES
        if p.parent.name != "app_pages" and p.name != "app.py"
    ]
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "bad = sorted({'torch', 'faiss', 'sqlite3'} & set(sys.modules))\n"
        "assert not bad, bad\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=UI.parent)
    assert result.returncode == 0, result.stderr
