"""Debian's Chromium under Playwright, as the README screenshots (scripts/take_screenshots.py) and the browser
tests drive it: /usr/bin/chromium, never a downloaded browser build."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page, Playwright

CHROMIUM = Path("/usr/bin/chromium")
#: Headless in a container: no sandbox (Chromium will not start with one as root), no GPU, no /dev/shm (often
#: small there), and none of the browser's own traffic (updates, sync, QUIC) beside the pages it is sent to.
ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
]  # fmt: skip


def launch(playwright: Playwright) -> Browser:
    """A headless Chromium from :data:`CHROMIUM`."""
    return playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)


def settle(page: Page, timeout_ms: float = 60_000) -> None:
    """Waits until Streamlit has finished running the page's script (no 'Running…' status widget)."""
    page.wait_for_load_state("networkidle")
    page.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=timeout_ms)
