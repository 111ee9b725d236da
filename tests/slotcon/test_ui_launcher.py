"""``slotcon ui --help`` answers without starting (or importing) Streamlit."""

from __future__ import annotations

import subprocess
import sys


def test_ui_help_is_clean() -> None:
    proc = subprocess.run([sys.executable, "-m", "slotcon", "ui", "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "--api" in proc.stdout and "--port" in proc.stdout
    assert "streamlit" not in proc.stderr.lower(), proc.stderr[:500]
