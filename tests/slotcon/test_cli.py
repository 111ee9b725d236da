"""The slotcon dispatcher."""

from __future__ import annotations

import subprocess
import sys

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
