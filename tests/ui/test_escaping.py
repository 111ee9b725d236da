"""User text (concept labels) is inert wherever the UI renders HTML (``unsafe_allow_html``)."""

from __future__ import annotations

from streamlit.testing.v1 import AppTest

from ui.components import colour_swatch, plain

EVIL = '<img src=x onerror="alert(1)"> **bold** [link](javascript:alert(1)) </span>'


def test_plain_escapes_html_and_markdown():
    out = plain(EVIL)
    assert "<" not in out and ">" not in out and "&lt;img" in out
    assert "\\*\\*bold\\*\\*" in out and "\\[link\\]\\(javascript:alert\\(1\\)\\)" in out
    assert plain("sky") == "sky"


def test_a_colour_that_is_not_hex_is_drawn_grey():
    assert "background:#888888" in colour_swatch("red;background:url(https://evil.example/x)", "t")
    assert "background:#12ab34" in colour_swatch("#12ab34", "t")


def _slots_page(label: str) -> None:
    import base64
    import io

    from PIL import Image

    from server.schemas import SlotsResult
    from ui.views.slot_view import show_slots

    png = io.BytesIO()
    Image.new("RGB", (8, 8), (255, 0, 0)).save(png, format="PNG")
    png = base64.b64encode(png.getvalue()).decode()
    slot = {
        "prototype": 3,
        "label": label,
        "area_share": 0.5,
        "area": 10,
        "score": 0.9,
        "bbox": [0, 0, 4, 4],
        "bbox_size": [8, 8],
        "rle": {"size": [8, 8], "counts": "08"},
        "color": [255, 0, 0],
        "neighbors": [],
    }
    answer = SlotsResult.model_validate(
        {
            "width": 8,
            "height": 8,
            "box": [0, 0, 8, 8],
            "assignment_png": png,
            "overlay_png": png,
            "slots": [slot],
            "elapsed_ms": 1.0,
        }
    )
    show_slots(answer.model_dump(), None)  # exactly the fields the API sends


def test_slot_view_renders_a_hostile_label_as_text():
    at = AppTest.from_function(_slots_page, args=(EVIL,), default_timeout=60).run()
    assert not at.exception
    html_blocks = [m.value for m in at.markdown if "<span" in m.value and "#3" in m.value]
    assert len(html_blocks) == 1  # the slot's title (the legend's swatch carries no text)
    links = [m.value for m in at.markdown if m.value.startswith("[\\#3")]  # the legend entry: a link
    assert len(links) == 1 and "<img" not in links[0] and "&lt;img" in links[0]
    for value in html_blocks:
        assert "<img" not in value and 'onerror="' not in value and "&lt;img" in value
        assert "](javascript" not in value and value.count("</span>") == 1  # only the swatch's own
