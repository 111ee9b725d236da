"""The slots of one image as answered by ``POST /api/slots``: the overlay with a legend, the list of
slots (prototype, label, area share, score) with per-slot crops, and each slot's nearest dataset
segments."""

from __future__ import annotations

import base64
import io
from collections.abc import Callable
from functools import partial
from typing import Any

import pandas as pd
import streamlit as st
from PIL import Image

from ui.components import colour_swatch, fmt_num, fmt_pct, page_link, plain
from ui.views.segments import segment_tiles


def decode_image(value: Any) -> bytes | None:
    """An image sent inline: base64 text (optionally a ``data:`` URI) → bytes; ``None`` if absent."""
    if not value or not isinstance(value, str):
        return None
    if value.startswith("data:"):
        value = value.split(",", 1)[1]
    try:
        return base64.b64decode(value)
    except ValueError:
        return None


def slot_colour(slot: dict) -> str:
    """The slot's colour as ``#rrggbb`` (``Slot.color``: the overlay's ``[r, g, b]``)."""
    return "#{:02x}{:02x}{:02x}".format(*(int(v) for v in slot["color"][:3]))


def slot_crop(slot: dict, original: bytes | None) -> bytes | None:
    """The slot's crop, cut from the original image by the slot's ``bbox`` (given in the pixels of the
    analysed image, ``bbox_size``; the original may be larger: uploads are analysed downscaled)."""
    if original is None:
        return None
    x, y, w, h = (float(v) for v in slot["bbox"])
    img = Image.open(io.BytesIO(original)).convert("RGB")
    ref_w, ref_h = slot["bbox_size"]
    sx, sy = img.width / float(ref_w), img.height / float(ref_h)
    box = (int(x * sx), int(y * sy), int((x + w) * sx), int((y + h) * sy))
    if box[2] <= box[0] or box[3] <= box[1]:
        return None
    out = io.BytesIO()
    img.crop(box).save(out, format="PNG")
    return out.getvalue()


def slots_table(slots: list[dict]) -> pd.DataFrame:
    """One row per slot: prototype, label, area share, score."""
    return pd.DataFrame(
        [
            {
                "prototype": s["prototype"],
                "label": s["label"] or "",
                "area share": s["area_share"],
                "score": s["score"],
            }
            for s in slots
        ]
    )


def _segment_links(segment: dict, key: str, on_image: Callable[[int], None] | None) -> None:
    """Under a neighbour: its prototype (with the segments similar to it) and its image, each opened; the
    image with ``on_image`` when given (this page), else by a link."""
    k = segment.get("prototype")
    if k is not None:
        page_link("concepts", f"Prototype #{k}", {"prototype": k, "segment": segment["id"]})
    image = int(segment["image_id"])
    if on_image is not None:
        st.button(f"Image {image}", key=f"{key}_img_{segment['id']}", on_click=on_image, args=(image,))
    else:
        page_link("image_slots", f"Image {image}", {"source": "Dataset", "image": image})


def own_segments_left_out(neighbours: list[dict], image_id: int | None) -> tuple[list[dict], int]:
    """The neighbours without the segments of the analysed dataset image itself (its own segments would be
    its nearest, at similarity 1), and how many were left out."""
    if image_id is None:
        return neighbours, 0
    kept = [n for n in neighbours if int(n["segment"]["image_id"]) != int(image_id)]
    return kept, len(neighbours) - len(kept)


def show_slots(
    answer: dict,
    original: bytes | None,
    overlay: bytes | None = None,
    *,
    image_id: int | None = None,
    on_image: Callable[[int], None] | None = None,
) -> None:
    """Renders the whole analysis of one image; ``image_id``: the dataset image analysed (its own segments
    are left out of the neighbours); ``on_image(id)`` opens a neighbour's dataset image."""
    slots = sorted(answer["slots"], key=lambda s: -s["area_share"])
    overlay = overlay or decode_image(answer["overlay_png"])
    left, right = st.columns([3, 2])
    with left:
        c1, c2 = st.columns(2)
        if original is not None:
            c1.image(original, caption="image", width="stretch")
        if overlay is not None:
            c2.image(overlay, caption="slots", width="stretch")
    with right:
        st.markdown(f"**{len(slots)} slots** on this image")
        for s in slots:  # each legend entry opens its prototype
            swatch, link = st.columns([1, 12], vertical_alignment="center", gap="small")
            swatch.markdown(colour_swatch(slot_colour(s), ""), unsafe_allow_html=True)
            with link:
                label = f"#{s['prototype']} {s['label'] or ''}".strip() + f" · {fmt_pct(s['area_share'])}"
                page_link("concepts", label, {"prototype": s["prototype"]})
    if not slots:
        return
    st.dataframe(
        slots_table(slots),
        hide_index=True,
        column_config={
            "area share": st.column_config.ProgressColumn("area share", min_value=0.0, max_value=1.0, format="percent"),
            "score": st.column_config.NumberColumn("score", format="%.3f"),
        },
    )
    space = {"encoder": "encoder features", "projector": "projector"}[answer["space"]]
    st.markdown(f"#### Slots and their nearest dataset segments (similarity in the {space} space)")
    if image_id is not None:
        st.caption(f"Segments of image {image_id} itself are left out of its neighbours.")
    for i, s in enumerate(slots):
        title = (
            f"Slot #{plain(s['prototype'])} {plain(s['label'] or '')} · {fmt_pct(s['area_share'])} of the "
            f"image · score {fmt_num(s['score'])}"
        )
        with st.container(border=True):
            st.markdown(colour_swatch(slot_colour(s), f"**{title}**"), unsafe_allow_html=True)
            crop_col, nn_col = st.columns([1, 4])
            crop = slot_crop(s, original)
            if crop is not None:
                crop_col.image(crop, caption="crop", width="stretch")
            with crop_col:
                page_link("concepts", f"Open prototype #{s['prototype']}", {"prototype": s["prototype"]})
            neighbours, left_out = own_segments_left_out(s["neighbors"], image_id)
            items = [(n["segment"], n["similarity"]) for n in neighbours]
            with nn_col:
                if items:
                    segment_tiles(
                        [seg for seg, _ in items],
                        key=f"slot_{i}_nn",
                        columns=5,
                        size=160,
                        similarities=[d for _, d in items],
                        link=partial(_segment_links, key=f"slot_{i}_nn", on_image=on_image),
                    )
                else:
                    st.caption("No similar dataset segments" + (" in other images." if left_out else "."))
