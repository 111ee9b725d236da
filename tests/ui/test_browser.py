"""End to end in a real browser: Debian's Chromium (driven by Playwright's Python package, never a
downloaded browser) opens the UI, served by ``slotcon ui`` against the live API; Concepts and Image
slots are used as a person would (open a concept, upload an image) and screenshots are saved.

Screenshots go to ``$SLOTCON_SCREENSHOT_DIR`` when set (``docs/screenshots`` for the README), else
to the test's temporary directory.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from scripts.browser import settle

pytestmark = pytest.mark.browser


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    """Where screenshots go."""
    out = Path(os.environ.get("SLOTCON_SCREENSHOT_DIR") or tmp_path)
    out.mkdir(parents=True, exist_ok=True)
    return out


def open_buttons(page):
    """The cards' "Open" buttons (exact label; the sidebar has other buttons with "open" in their name)."""
    return page.locator("button").filter(has_text=re.compile(r"^\s*Open\s*$"))


def test_concepts_and_image_slots_in_chromium(
    ui_url: str, live_api: str, browser, shots: Path, synthetic_root: Path
) -> None:
    import httpx
    from playwright.sync_api import expect

    protos = httpx.get(f"{live_api}/api/prototypes", timeout=30).json()
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))

    # Concepts: the grid with its counts and one best-segment image per live prototype.
    page.goto(ui_url)  # Concepts is the default page, served at the root
    page.get_by_text(f"{protos['total']} prototypes · {protos['num_dead']} dead").wait_for(timeout=60_000)
    settle(page)
    alive = [p for p in protos["items"] if not p["dead"]]
    expect(open_buttons(page)).to_have_count(len(alive), timeout=60_000)
    page.locator("[data-testid='stImage'] img").first.wait_for(timeout=30_000)
    assert page.locator("[data-testid='stImage'] img").count() >= len(alive)
    page.screenshot(path=str(shots / "concepts.png"), full_page=True)

    # Open the most active prototype: its top-k segments with the mask overlaid.
    best = max(alive, key=lambda p: p["num_segments"])
    open_buttons(page).first.click()
    page.get_by_text(re.compile(r"^Top \d+ segments")).first.wait_for(timeout=60_000)
    settle(page)
    expect(page.get_by_text("Prototype #").first).to_be_visible(timeout=60_000)
    expect(page.get_by_role("button", name="Similar segments")).to_have_count(
        min(12, best["num_segments"]), timeout=60_000
    )
    page.screenshot(path=str(shots / "concept_topk.png"), full_page=True)
    assert best["num_segments"] > 0

    # Image slots: upload an image and see its slots, legend, crops and neighbours.
    page.goto(f"{ui_url}/image_slots")
    page.locator("input[type='file']").wait_for(state="attached", timeout=60_000)
    image = sorted((synthetic_root / "val2017").glob("*.jpg"))[0]
    page.locator("input[type='file']").set_input_files(str(image))
    page.get_by_text("slots on this image").wait_for(timeout=90_000)
    settle(page)
    expect(page.get_by_text("Slot #").first).to_be_visible(timeout=60_000)
    assert page.get_by_text("nearest dataset segments").count() == 1
    page.locator("[data-testid='stImage'] img").nth(2).wait_for(timeout=60_000)  # overlay, crops: drawn in turn
    assert page.locator("[data-testid='stImage'] img").count() >= 3
    page.screenshot(path=str(shots / "image_slots.png"), full_page=True)

    assert page.get_by_text("not reachable").count() == 0
    assert page.locator("[data-testid='stException']").count() == 0
    assert errors == []
    page.close()


def test_a_shared_link_reopens_the_view_in_chromium(ui_url: str, live_api: str, browser, shots: Path) -> None:
    """A copied address reopens the same page, prototype and statistics threshold; clicking writes
    the new state back into the address bar."""
    import httpx
    from playwright.sync_api import expect

    protos = httpx.get(f"{live_api}/api/prototypes", timeout=30).json()["items"]
    k = max(protos, key=lambda p: p["num_segments"])["id"]
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(f"{ui_url}/?prototype={k}")
    page.get_by_text(f"Prototype #{k}").first.wait_for(timeout=60_000)
    settle(page)
    expect(page.get_by_text(re.compile(r"^Top \d+ segments")).first).to_be_visible(timeout=60_000)
    page.screenshot(path=str(shots / "link_prototype.png"), full_page=True)

    page.goto(f"{ui_url}/statistics?duplicates=0.62")
    page.get_by_text("(cosine ≥ 0.62)").wait_for(timeout=60_000)
    settle(page)
    assert "duplicates=0.62" in page.url

    page.goto(f"{ui_url}/?sort=id&hide_dead=0")
    page.get_by_text("prototypes ·").first.wait_for(timeout=60_000)
    settle(page)
    open_buttons(page).first.wait_for(timeout=60_000)
    assert open_buttons(page).count() == len(protos)  # dead ones shown: the link said hide_dead=0
    open_buttons(page).first.click()
    page.wait_for_function("() => location.search.includes('prototype=')", timeout=60_000)
    assert "sort=id" in page.url and "hide_dead=0" in page.url
    page.close()


def _heading(page, text: str):
    """The headings (any level) that contain ``text``."""
    return page.locator("h1, h2, h3, h4, h5, h6").filter(has_text=text)


def _red_point(page) -> tuple[float, float]:
    """Where the biggest active prototype's point (drawn #d62728) lies on the map, in page pixels: the
    centre of the largest red blob of the chart's screenshot (the chart draws to SVG, with no hook for a
    point's position; the legend's small red swatch is a smaller blob)."""
    import io

    import numpy as np
    from PIL import Image
    from scipy import ndimage

    chart = page.locator("[data-testid='stVegaLiteChart']").first
    chart.scroll_into_view_if_needed()
    box = chart.bounding_box()
    img = np.asarray(Image.open(io.BytesIO(chart.screenshot())).convert("RGB")).astype(int)
    red = (abs(img[..., 0] - 0xD6) < 30) & (abs(img[..., 1] - 0x27) < 30) & (abs(img[..., 2] - 0x28) < 30)
    blobs, n = ndimage.label(red)
    assert n, "no active prototype drawn on the map"
    sizes = ndimage.sum(red, blobs, range(1, n + 1))
    y, x = ndimage.center_of_mass(red, blobs, int(np.argmax(sizes)) + 1)
    return box["x"] + float(x), box["y"] + float(y)


def _prototype_in_url(page) -> str | None:
    from urllib.parse import parse_qs, urlparse

    return (parse_qs(urlparse(page.url).query).get("prototype") or [None])[0]


def test_back_and_forward_move_between_views_in_chromium(ui_url: str, browser, shots: Path) -> None:
    """Grid → prototype → its similar segments, then Back twice and Forward twice: each step shows the view
    its URL names, and the similar-segments panel is gone as soon as its view is left."""
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(ui_url)
    open_buttons(page).first.wait_for(timeout=60_000)
    settle(page)
    open_buttons(page).first.click()
    _heading(page, "Prototype #").first.wait_for(timeout=60_000)
    page.wait_for_url(re.compile(r"prototype="), timeout=30_000)
    settle(page)
    k = _prototype_in_url(page)
    page.get_by_role("button", name="Similar segments").first.click()
    similar = _heading(page, "Segments similar to segment")
    similar.first.wait_for(timeout=60_000)
    settle(page)
    page.wait_for_url(re.compile(r"segment="), timeout=30_000)
    page.screenshot(path=str(shots / "history_similar.png"))

    page.go_back()  # the prototype without the panel
    expect(similar).to_have_count(0, timeout=30_000)
    settle(page)
    assert _prototype_in_url(page) == k and "segment=" not in page.url
    expect(_heading(page, f"Prototype #{k}").first).to_be_visible()

    page.go_back()  # the grid
    expect(_heading(page, "Prototype #")).to_have_count(0, timeout=30_000)
    settle(page)
    assert _prototype_in_url(page) is None
    expect(open_buttons(page).first).to_be_visible(timeout=30_000)
    page.screenshot(path=str(shots / "history_back_to_grid.png"))

    page.go_forward()  # the prototype again
    expect(_heading(page, f"Prototype #{k}").first).to_be_visible(timeout=30_000)
    settle(page)
    assert _prototype_in_url(page) == k
    expect(similar).to_have_count(0)

    page.go_forward()  # and its panel
    expect(similar.first).to_be_visible(timeout=30_000)
    page.wait_for_url(re.compile(r"segment="), timeout=30_000)
    assert errors == []
    page.close()


def test_panels_and_map_points_open_what_they_show_in_chromium(
    ui_url: str, live_api: str, browser, shots: Path
) -> None:
    """The similar-segments panel of one prototype is absent under another; a map point opens on its
    second click too (after Back, and after "All concepts")."""
    import httpx
    from playwright.sync_api import expect

    alive = [p for p in httpx.get(f"{live_api}/api/prototypes", timeout=30).json()["items"] if not p["dead"]]
    assert len(alive) >= 2
    first, second = alive[0]["id"], alive[1]["id"]
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(f"{ui_url}/?prototype={first}")
    _heading(page, f"Prototype #{first}").first.wait_for(timeout=60_000)
    settle(page)
    page.get_by_role("button", name="Similar segments").first.click()
    similar = _heading(page, "Segments similar to segment")
    similar.first.wait_for(timeout=60_000)
    settle(page)
    page.get_by_role("button", name="← All concepts").click()
    open_buttons(page).first.wait_for(timeout=60_000)
    settle(page)
    page.locator(f".st-key-open_{second} button").click()
    _heading(page, f"Prototype #{second}").first.wait_for(timeout=60_000)
    settle(page)
    expect(similar).to_have_count(0)
    assert "segment=" not in page.url

    page.goto(f"{ui_url}/?view=Map")
    page.locator("[data-testid='stVegaLiteChart']").first.wait_for(timeout=60_000)
    settle(page)
    page.mouse.click(*_red_point(page))
    _heading(page, "Prototype #").first.wait_for(timeout=60_000)
    page.wait_for_url(re.compile(r"prototype="), timeout=30_000)
    settle(page)
    opened = _prototype_in_url(page)
    for leave in ("back", "all concepts"):
        if leave == "back":
            page.go_back()
        else:
            page.get_by_role("button", name="← All concepts").click()
        page.locator("[data-testid='stVegaLiteChart']").first.wait_for(timeout=60_000)
        page.wait_for_url(lambda url: "prototype=" not in url, timeout=30_000)
        settle(page)
        page.mouse.click(*_red_point(page))  # the same point again
        _heading(page, f"Prototype #{opened}").first.wait_for(timeout=60_000)
        page.wait_for_url(re.compile(rf"prototype={opened}\b"), timeout=30_000)
        settle(page)
    page.screenshot(path=str(shots / "map_reopened.png"))
    page.close()


def test_image_slots_links_open_what_they_show_in_chromium(ui_url: str, browser, shots: Path) -> None:
    """A dataset image's neighbours leave out its own segments; a neighbour's image, a thumbnail and a legend
    entry open what they show, and Back returns to the image before."""
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(f"{ui_url}/image_slots?source=Dataset&image=3")
    page.get_by_text("Segments of image 3 itself are left out").wait_for(timeout=90_000)
    settle(page)
    captions = page.locator("[data-testid='stCaptionContainer']").filter(has_text=re.compile(r"^seg \d+ · img \d+"))
    expect(captions.first).to_be_visible(timeout=30_000)
    assert not any(" · img 3 · " in c for c in captions.all_inner_texts())  # its own segments left out
    page.screenshot(path=str(shots / "image_slots_neighbours.png"), full_page=True)

    neighbour = page.get_by_role(
        "button", name=re.compile(r"^Image [1-9]\d*$")
    ).first  # image 0: the default, no ?image=
    other = neighbour.inner_text().split()[-1]
    neighbour.click()  # the neighbour's image
    page.get_by_text(f"Segments of image {other} itself are left out").wait_for(timeout=90_000)
    page.wait_for_url(re.compile(rf"image={other}\b"), timeout=30_000)
    settle(page)

    page.locator(".st-key-slots_thumb_5 button").first.click()  # a thumbnail
    page.get_by_text("Segments of image 5 itself are left out").wait_for(timeout=90_000)
    page.wait_for_url(re.compile(r"image=5\b"), timeout=30_000)
    settle(page)

    legend = page.locator("[data-testid='stPageLink'] a").filter(has_text=re.compile(r"^#\d+"))
    k = legend.first.inner_text().split()[0].lstrip("#")
    legend.first.click()  # a legend entry: its prototype
    _heading(page, f"Prototype #{k}").first.wait_for(timeout=60_000)
    settle(page)

    page.go_back()
    page.get_by_text("Segments of image 5 itself are left out").wait_for(timeout=90_000)
    page.go_back()
    page.get_by_text(f"Segments of image {other} itself are left out").wait_for(timeout=90_000)
    page.close()


@pytest.mark.slow
def test_finished_training_and_evaluation_jobs_show_without_a_reload_in_chromium(
    jobs_servers: tuple[str, str], browser, shots: Path
) -> None:
    """A one-epoch training run and an evaluation, each started from its page: the page reports the job
    finished, with its result and next step, while the same document stays loaded (no reload)."""
    import httpx

    live_api, ui_url = jobs_servers
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(f"{ui_url}/training")
    page.get_by_role("button", name="Start training").wait_for(timeout=60_000)
    settle(page)
    page.evaluate("() => { window.__same_document = true; }")
    epochs = page.get_by_role("spinbutton", name="Epochs")
    epochs.fill("1")
    epochs.press("Tab")
    page.get_by_role("button", name="Start training").click()
    page.get_by_text("Run finished:").wait_for(timeout=240_000)
    assert page.evaluate("() => window.__same_document === true")
    page.wait_for_function(  # the "Watch run" choice says it too
        "() => document.querySelector('.st-key-train_job input').value.endsWith('succeeded')", timeout=10_000
    )
    assert page.get_by_text(re.compile(r"\bNone\b")).count() == 0  # no raw Python None
    assert page.get_by_text(re.compile(r"\b1[7-9]\d{8}\b")).count() == 0  # no raw Unix seconds
    page.screenshot(path=str(shots / "training_finished.png"), full_page=True)
    jobs = httpx.get(f"{live_api}/api/jobs", timeout=30).json()["items"]
    assert any(j["kind"] == "train" and j["status"] == "succeeded" for j in jobs)

    page.goto(f"{ui_url}/segmentation")
    page.get_by_text("Run an evaluation").wait_for(timeout=60_000)
    settle(page)
    page.evaluate("() => { window.__same_document = true; }")
    page.get_by_text("Run an evaluation").click()
    resolution = page.get_by_role("spinbutton", name="Resolution")
    resolution.fill("64")
    resolution.press("Tab")
    seeds = page.get_by_role("spinbutton", name="Seeds")
    seeds.fill("1")
    seeds.press("Tab")
    page.get_by_role("button", name="Start evaluation").click()
    page.get_by_text(re.compile(r"Evaluation job \d+ finished")).wait_for(timeout=240_000)
    assert page.evaluate("() => window.__same_document === true")
    page.screenshot(path=str(shots / "evaluation_finished.png"), full_page=True)
    page.close()
