"""The slots of one image as answered by ``POST /api/slots``: the overlay with a legend, the list of
slots (prototype, label, area share, score) with per-slot crops, and each slot's nearest dataset
segments."""

from __future__ import annotations

import base64
import io
from typing import Any

import pandas as pd
import streamlit as st
from PIL import Image

from ui.components import PALETTE, colour_swatch, fmt_num, fmt_pct, plain
from ui.views.segments import segment_tiles, unpack_neighbor


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


def _first(d: dict, *keys: str) -> Any:
    for key in keys:
        if d.get(key) is not None:
            return d[key]
    return None


def slot_colour(slot: dict, i: int) -> str:
    """The slot's colour as ``#rrggbb`` (the API's, else the UI palette's)."""
    c = slot.get("color", slot.get("colour"))
    if isinstance(c, (list, tuple)) and len(c) >= 3:
        return "#{:02x}{:02x}{:02x}".format(*(int(v) for v in c[:3]))
    if isinstance(c, str) and c:
        return c
    return PALETTE[i % len(PALETTE)]


def slot_crop(slot: dict, original: bytes | None) -> bytes | None:
    """The slot's crop: sent by the API, else cut from the original image by the slot's bbox."""
    sent = decode_image(_first(slot, "crop", "crop_png", "crop_jpeg"))
    if sent is not None or original is None or not slot.get("bbox"):
        return sent
    x, y, w, h = (float(v) for v in slot["bbox"][:4])
    img = Image.open(io.BytesIO(original)).convert("RGB")
    ref_w, ref_h = slot.get("bbox_size", (img.width, img.height))[:2] if slot.get("bbox_size") else (
        img.width, img.height)
    sx, sy = img.width / float(ref_w), img.height / float(ref_h)
    box = (int(x * sx), int(y * sy), int((x + w) * sx), int((y + h) * sy))
    if box[2] <= box[0] or box[3] <= box[1]:
        return None
    out = io.BytesIO()
    img.crop(box).save(out, format="PNG")
    return out.getvalue()


def slots_table(slots: list[dict]) -> pd.DataFrame:
    """One row per slot: prototype, label, area share, score."""
    return pd.DataFrame([{
        "prototype": s.get("prototype"),
        "label": s.get("label") or "",
        "area share": float(_first(s, "area_share", "area_fraction", "share") or 0.0),
        "score": _first(s, "score", "mean_score"),
    } for s in slots])


def show_slots(answer: dict, original: bytes | None, overlay: bytes | None = None) -> None:
    """Renders the whole analysis of one image."""
    slots = sorted(answer.get("slots", []), key=lambda s: -float(_first(s, "area_share", "area_fraction",
                                                                          "share") or 0.0))
    overlay = overlay or decode_image(_first(answer, "overlay", "overlay_png", "slots_png"))
    left, right = st.columns([3, 2])
    with left:
        c1, c2 = st.columns(2)
        if original is not None:
            c1.image(original, caption="image", width="stretch")
        if overlay is not None:
            c2.image(overlay, caption="slots", width="stretch")
    with right:
        st.markdown(f"**{len(slots)} slots** on this image")
        legend = [colour_swatch(slot_colour(s, i), f"#{plain(s.get('prototype'))} {plain(s.get('label') or '')} "
                                f"· {fmt_pct(_first(s, 'area_share', 'area_fraction', 'share'))}")
                  for i, s in enumerate(slots)]
        st.markdown("<br>".join(legend), unsafe_allow_html=True)
    if not slots:
        return
    st.dataframe(slots_table(slots), hide_index=True, column_config={
        "area share": st.column_config.ProgressColumn("area share", min_value=0.0, max_value=1.0,
                                                      format="percent"),
        "score": st.column_config.NumberColumn("score", format="%.3f"),
    })
    st.markdown("#### Slots and their nearest dataset segments")
    for i, s in enumerate(slots):
        share = _first(s, "area_share", "area_fraction", "share")
        title = (f"Slot #{plain(s.get('prototype'))} {plain(s.get('label') or '')} · {fmt_pct(share)} of the image"
                 f" · score {fmt_num(_first(s, 'score', 'mean_score'))}")
        with st.container(border=True):
            st.markdown(colour_swatch(slot_colour(s, i), f"**{title}**"), unsafe_allow_html=True)
            crop_col, nn_col = st.columns([1, 4])
            crop = slot_crop(s, original)
            if crop is not None:
                crop_col.image(crop, caption="crop", width="stretch")
            items = [unpack_neighbor(n) for n in s.get("neighbors", [])]
            with nn_col:
                if items:
                    segment_tiles([seg for seg, _ in items], key=f"slot_{i}_nn", columns=5, size=160,
                                  similarities=[d for _, d in items])
                else:
                    st.caption("No similar dataset segments.")
