"""Screenshots of a running explorer for the README, in Debian's Chromium (never a downloaded browser).

    python scripts/take_screenshots.py --ui http://127.0.0.1:8501 --image data/synthetic/val2017/000000000001.jpg \\
        --out docs/screenshots

Run it against ``make demo``. Saves concepts.png, concept_topk.png, image_slots.png, statistics.png,
segmentation.png.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from playwright.sync_api import sync_playwright

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scripts.browser import launch, settle  # noqa: E402


def _settle(page) -> None:
    settle(page, timeout_ms=120_000)
    page.wait_for_timeout(1500)  # images and charts finish drawing after the script has run


def main() -> int:
    """Takes the screenshots; returns 0."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ui", default="http://127.0.0.1:8501")
    p.add_argument("--image", type=Path, required=True, help="an image to upload on Image slots")
    p.add_argument("--out", type=Path, default=Path("docs/screenshots"))
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = launch(pw)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(args.ui)
        page.get_by_text("prototypes ·").first.wait_for(timeout=120_000)
        _settle(page)
        page.screenshot(path=str(args.out / "concepts.png"))
        page.locator("button").filter(has_text=re.compile(r"^\s*Open\s*$")).first.click()
        page.get_by_text("Top ").first.wait_for(timeout=120_000)
        _settle(page)
        page.screenshot(path=str(args.out / "concept_topk.png"))
        page.goto(f"{args.ui}/image_slots")
        page.locator("input[type='file']").wait_for(state="attached", timeout=120_000)
        page.locator("input[type='file']").set_input_files(str(args.image))
        page.get_by_text("slots on this image").wait_for(timeout=120_000)
        _settle(page)
        page.screenshot(path=str(args.out / "image_slots.png"))
        for name in ("statistics", "segmentation"):
            page.goto(f"{args.ui}/{name}")
            _settle(page)
            page.screenshot(path=str(args.out / f"{name}.png"), full_page=True)
        browser.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
