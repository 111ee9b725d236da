"""``slotcon ui [--api URL] [--port P]``: runs the Streamlit explorer (``streamlit run ui/app.py``).

The UI listens on 127.0.0.1 unless ``--host`` says otherwise and reads the API URL from ``--api``
(passed on as ``SLOTCON_API_URL``).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import ui
from server import processes
from ui.endpoints import API_URL_ENV, DEFAULT_API_URL

APP = Path(ui.__file__).with_name("app.py")


def get_args_parser() -> argparse.ArgumentParser:
    """The options of ``slotcon ui``."""
    p = argparse.ArgumentParser(prog="slotcon ui", description="Run the SlotCon Explorer web UI (Streamlit).")
    p.add_argument(
        "--api",
        default=os.environ.get(API_URL_ENV, DEFAULT_API_URL),
        help=f"base URL of the SlotCon API (default: ${API_URL_ENV} or {DEFAULT_API_URL})",
    )
    p.add_argument("--port", type=int, default=8501, help="port of the UI (default: 8501)")
    p.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1; 0.0.0.0 inside a container)"
    )
    p.add_argument("--browser", action="store_true", help="open a browser tab when the UI is up")
    return p


def streamlit_command(args: argparse.Namespace) -> list[str]:
    """The ``python -m streamlit run ui/app.py ...`` command line for ``args``."""
    return [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(APP),
        "--server.address",
        args.host,
        "--server.port",
        str(args.port),
        "--server.headless",
        "false" if args.browser else "true",
        "--browser.gatherUsageStats",
        "false",
        "--server.fileWatcherType",
        "none",
        "--theme.base",
        "light",
        "--client.toolbarMode",
        "viewer",
    ]


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the UI in the foreground until it exits or is interrupted; returns its exit code."""
    args = get_args_parser().parse_args(argv)
    env = {**os.environ, API_URL_ENV: args.api.rstrip("/")}
    print(f"[ui] SlotCon Explorer on http://{args.host}:{args.port} (API {args.api})", flush=True)
    proc = subprocess.Popen(streamlit_command(args), env=env)
    signal.signal(signal.SIGTERM, _raise_interrupt)  # a supervisor's SIGTERM stops Streamlit too
    try:
        return proc.wait()
    except KeyboardInterrupt:
        processes.stop(proc)
        return 0


if __name__ == "__main__":
    sys.exit(main())
