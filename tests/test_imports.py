"""The arrows between the packages point one way, checked on the syntax tree of every module.

    ui ──HTTP──▶ server ──▶ indexer ──▶ core ◀── trainer          slotcon ──▶ everything

``core`` (the method) imports none of the other packages; ``trainer`` and ``indexer`` know only ``core``;
``server`` never imports the trainer (it launches it as a process), the UI or ``slotcon``; ``ui`` speaks HTTP
only (no torch, faiss or sqlite, and none of the packages that bring them). ``slotcon`` (orchestration) sits
above them all and nothing imports it. The two modules the CLI and the server's jobs share,
:mod:`server.processes` and :mod:`server.commands`, import nothing of the project.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("core", "trainer", "indexer", "server", "ui", "slotcon")
LEAVES = {"server.processes", "server.commands"}
#: package → top-level names its modules must not import (``slotcon`` except its leaves: see ALLOWED).
FORBIDDEN: dict[str, set[str]] = {
    "core": {"trainer", "indexer", "server", "ui", "slotcon"},
    "trainer": {"indexer", "server", "ui", "slotcon"},
    "indexer": {"trainer", "server", "ui", "slotcon"},
    "server": {"trainer", "ui", "slotcon"},
    "ui": {"torch", "torchvision", "faiss", "sqlite3", "core", "trainer", "indexer", "server", "slotcon"},
    "slotcon": set(),
}
ALLOWED: dict[str, set[str]] = {}
MODULES = sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


def imported(path: Path) -> set[str]:
    """Dotted names of every module ``path`` imports: ``import``/``from`` statements at any depth (lazy
    imports count) and ``importlib.import_module``/``__import__`` calls on a literal name."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", "")) in ("import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            names.add(str(node.args[0].value))
    return names


def violations(path: Path) -> list[str]:
    """The imports of ``path`` that break the arrows of its package."""
    rel = path.relative_to(ROOT)
    package, module = rel.parts[0], ".".join(rel.with_suffix("").parts)
    forbidden = set(FORBIDDEN[package]) | ({p for p in PACKAGES if p != package} if module in LEAVES else set())
    allowed = ALLOWED.get(package, set())
    bad = []
    for name in sorted(imported(path)):
        if name.split(".")[0] in forbidden and not any(name == a or name.startswith(a + ".") for a in allowed):
            bad.append(name)
    return bad


def test_every_package_is_walked() -> None:
    assert {p.relative_to(ROOT).parts[0] for p in MODULES} == set(PACKAGES)
    assert (ROOT / "slotcon" / "cli.py").is_file() and not (ROOT / "core" / "cli.py").exists()


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_imports_point_one_way(path: Path) -> None:
    assert violations(path) == []


def test_the_checker_sees_a_wrong_arrow(tmp_path: Path) -> None:
    """The walker finds lazy and by-name imports (a test that cannot fail checks nothing)."""
    fake = ROOT / "core" / "_arrow_probe.py"
    fake.write_text(
        "def f():\n    import importlib\n    from server.app import create_app\n"
        "    return importlib.import_module('ui.client'), create_app\n"
    )
    try:
        assert violations(fake) == ["server.app", "server.app.create_app", "ui.client"]
    finally:
        fake.unlink()
    leaf = ROOT / "server" / "processes.py"
    assert violations(leaf) == [] and "httpx" in {n.split(".")[0] for n in imported(leaf)}


def test_only_the_ui_client_speaks_http() -> None:
    """The UI's pages reach the API through ``ui/client.py`` alone."""
    users = sorted(
        p.relative_to(ROOT).as_posix()
        for p in MODULES
        if p.relative_to(ROOT).parts[0] == "ui" and {n.split(".")[0] for n in imported(p)} & {"httpx", "requests"}
    )
    assert users == ["ui/client.py"]


def test_importing_the_ui_loads_no_torch() -> None:
    """What the syntax cannot show: importing every UI module pulls in no torch, FAISS or SQLite."""
    modules = [
        ".".join(p.relative_to(ROOT).with_suffix("").parts)
        for p in MODULES
        if p.relative_to(ROOT).parts[0] == "ui" and p.parent.name != "app_pages" and p.name != "app.py"
    ]
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "bad = sorted({'torch', 'faiss', 'sqlite3'} & set(sys.modules))\n"
        "assert not bad, bad\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
