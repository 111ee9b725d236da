"""``slotcon serve`` / ``python -m server``: run the API with uvicorn.

    slotcon serve --index indexes/demo                  # http://127.0.0.1:8000/docs
    SLOTCON_API_TOKEN=... slotcon serve --host 0.0.0.0  # exposed: mutating routes need the token

Every option also comes from ``SLOTCON_<NAME>`` environment variables (flags win).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

#: Seconds uvicorn waits for requests in flight after SIGTERM before it cancels them and exits.
GRACE_S = 3


def get_args_parser() -> argparse.ArgumentParser:
    """The ``slotcon serve`` flags (each defaults to its SLOTCON_* variable or the built-in default)."""
    p = argparse.ArgumentParser(
        prog="slotcon serve", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--index", type=Path, help="the default index directory (SLOTCON_INDEX; else the stored default)")
    p.add_argument("--checkpoint", type=Path, help="model for uploads without an index (SLOTCON_CHECKPOINT)")
    p.add_argument("--host", help="bind address (SLOTCON_HOST, default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (SLOTCON_PORT, default 8000)")
    p.add_argument("--data-root", type=Path, help="dataset for train/index jobs (SLOTCON_DATA_ROOT)")
    p.add_argument("--runs-dir", type=Path, help="where training jobs write runs (SLOTCON_RUNS_DIR)")
    p.add_argument("--indexes-dir", type=Path, help="where index jobs write indexes (SLOTCON_INDEXES_DIR)")
    p.add_argument("--state-dir", type=Path, help="jobs database and logs (SLOTCON_STATE_DIR)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="inference device (SLOTCON_DEVICE)")
    p.add_argument("--ui-origin", help="the UI's origin for CORS (SLOTCON_UI_ORIGIN)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Parse flags, build the settings and serve until interrupted; returns the exit code."""
    import uvicorn

    from server.app import create_app
    from server.settings import Settings

    args = get_args_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    overrides = {k: v for k, v in vars(args).items() if v is not None and k != "log_level"}
    from indexer.progress import configure_logging

    configure_logging(args.log_level.upper())
    settings = Settings(**overrides)
    try:
        app = create_app(settings)
    except RuntimeError as e:
        print(f"slotcon serve: {e}", file=sys.stderr)
        return 2
    # Requests still running after SIGTERM get a few seconds (their work checks the server's stopping
    # flag and ends), then the server exits whatever they do.
    uvicorn.run(
        app, host=settings.host, port=settings.port, log_level=args.log_level, timeout_graceful_shutdown=GRACE_S
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
