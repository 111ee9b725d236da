"""The slotcon dispatcher."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from slotcon.cli import SUBCOMMANDS, main


def test_help_lists_every_command(capsys) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in SUBCOMMANDS)


def test_unknown_command_is_an_error(capsys) -> None:
    assert main(["frobnicate"]) == 2
    assert "unknown command" in capsys.readouterr().err


def test_console_entry_point_runs() -> None:
    proc = subprocess.run([sys.executable, "-m", "slotcon", "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "synth" in proc.stdout


def test_every_command_names_a_module_with_main() -> None:
    """Each subcommand's module exists (found without importing it, so no torch is loaded)."""
    import importlib.util

    for name, (module, _) in SUBCOMMANDS.items():
        assert importlib.util.find_spec(module) is not None, name
    assert SUBCOMMANDS["demo"][0] == "slotcon.demo" and SUBCOMMANDS["ui"][0] == "slotcon.ui_launcher"


def test_every_command_module_defines_main_of_argv() -> None:
    """Each subcommand's module defines a top-level ``main(argv...)`` (read from its syntax tree: no import)."""
    import ast
    import importlib.util

    for name, (module, _) in SUBCOMMANDS.items():
        source = Path(importlib.util.find_spec(module).origin).read_text()
        mains = [n for n in ast.parse(source).body if isinstance(n, ast.FunctionDef) and n.name == "main"]
        assert mains and [a.arg for a in mains[0].args.args] == ["argv"], name


def test_index_tools_are_wired(tmp_path: Path, tiny_checkpoint: Path, synthetic_root: Path, capsys) -> None:
    """compare, figure and export-index run through the dispatcher on a real tiny index (``export`` stays
    the checkpoint export)."""
    from indexer.build import build_index

    assert SUBCOMMANDS["compare"][0] == "indexer.compare_cli" and SUBCOMMANDS["figure"][0] == "indexer.figure_cli"
    assert SUBCOMMANDS["export-index"][0] == "indexer.export_cli" and SUBCOMMANDS["export"][0] == "trainer.export"
    index = build_index(tiny_checkpoint, synthetic_root, tmp_path / "index", split="val2017", batch_size=4)
    assert main(["compare", str(index), str(index), "--json", "-"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["born"] == [] and result["died"] == [] and result["same_id_matches"] == len(result["pairs"]) > 0
    fig = tmp_path / "fig.svg"
    assert main(["figure", "--index", str(index), "--prototypes", "0,3", "--topk", "2", "--out", str(fig)]) == 0
    assert fig.read_text().count("<image ") + fig.read_text().count('fill="#e8e8e8"') == 4
    assert main(["export-index", "--index", str(index), "--format", "csv", "--out", str(tmp_path / "t")]) == 0
    assert (tmp_path / "t" / "segments.csv").is_file()
    capsys.readouterr()
    assert main(["figure", "--index", str(index), "--prototypes", "0,99", "--out", str(tmp_path / "x.png")]) == 2
