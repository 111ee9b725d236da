"""The index picker in a real browser (Debian's Chromium driven by Playwright, against the shared live API and
UI of ``tests/ui/conftest.py``): a link naming a non-default index shows that index's segments, the pages'
URLs keep naming it, and a link to an earlier build of it warns."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from scripts.browser import settle

pytestmark = pytest.mark.browser


@pytest.fixture
def other_index(ui_index: Path, synthetic_root: Path, make_tiny_model, tmp_path: Path) -> Iterator[str]:
    """An index of another model beside the live API's default one (removed afterwards: other tests count
    the indexes); yields its name."""
    import shutil

    from core.checkpoint import save_checkpoint
    from indexer.build import build_index

    ckpt = save_checkpoint(tmp_path / "other.pth", make_tiny_model(7))
    out = ui_index.parent / "picker-other"
    build_index(ckpt, synthetic_root, out, split="val2017", resize=96, crop=96, batch_size=12)
    try:
        yield out.name
    finally:
        shutil.rmtree(out, ignore_errors=True)


def _shown_segment_ids(page) -> list[int]:
    """The segment ids of the tiles' captions (``seg 12 · img 3 · ...``), in page order."""
    texts = page.get_by_text(re.compile(r"^seg \d+ · img \d+")).all_inner_texts()
    return [int(re.match(r"seg (\d+)", t).group(1)) for t in texts]


def test_a_link_naming_an_index_shows_that_index_in_chromium(
    ui_url: str, live_api: str, browser, other_index: str, tmp_path: Path
) -> None:
    """A link naming a non-default index, opened in a fresh browser, shows that index's segments (the ids
    the API answers for it, not the default's); the pages' URLs keep naming it; a link to an earlier build
    of it warns instead of showing other segments."""
    import httpx
    from playwright.sync_api import expect

    api = httpx.Client(base_url=live_api, timeout=30)
    listing = api.get("/api/indexes").json()
    assert listing["default"] != other_index and other_index in [i["name"] for i in listing["items"]]
    protos = api.get("/api/prototypes", params={"index": other_index}).json()["items"]
    k = max(protos, key=lambda p: p["num_segments"])["id"]
    wanted = [s["id"] for s in api.get(f"/api/prototypes/{k}/segments", params={"index": other_index}).json()["items"]]
    default = [s["id"] for s in api.get(f"/api/prototypes/{k}/segments").json()["items"]]
    assert wanted and wanted != default

    context = browser.new_context(viewport={"width": 1400, "height": 1000})  # a browser with no session yet
    page = context.new_page()
    page.goto(f"{ui_url}/?prototype={k}&index={other_index}")
    expect(page.get_by_text(re.compile(r"^Top \d+ segments")).first).to_be_visible(timeout=60_000)
    settle(page)
    shown = _shown_segment_ids(page)
    assert shown and sorted(shown) == sorted(wanted[: len(shown)]), (shown, wanted, default)  # tiles fill columns
    assert f"index={other_index}" in page.url and "build=" in page.url
    page.screenshot(path=str(tmp_path / "index-picker.png"), full_page=True)

    page.get_by_role("link", name="Slot statistics").click()  # another page: the URL still names the index
    page.wait_for_url(re.compile(r"/statistics"), timeout=30_000)
    settle(page)
    assert f"index={other_index}" in page.url

    page.goto(f"{ui_url}/?prototype={k}&index={other_index}&build=0123abcd")  # an earlier build's link
    expect(page.get_by_text(re.compile(r"earlier build of")).first).to_be_visible(timeout=60_000)
    settle(page)
    assert _shown_segment_ids(page) == []
    context.close()
