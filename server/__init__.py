"""SlotCon Explorer's REST backend (FastAPI): concept queries, uploads, rendering and jobs.

Start it with ``slotcon serve`` (see :mod:`server.__main__`) or build the ASGI app with
:func:`server.app.create_app`. Every route lives under ``/api``; OpenAPI is served at ``/docs``.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("slotcon-explorer")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

__all__ = ["__version__"]
