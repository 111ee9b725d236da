"""Tiles of segments: each one the image with the segment's mask overlaid (the paper's Figure 3 look).

The overlay is drawn by the API (``GET /api/images/{id}/overlay?segment=``): the mask reddish, the
rest of the image visible.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import streamlit as st

from ui.client import ApiRequestError, api_url, fetch_overlay
from ui.components import fmt_num


def segment_overlay(segment: dict, size: int = 256) -> bytes | None:
    """The overlay image of one segment (``None`` when the API could not draw it)."""
    try:
        return fetch_overlay(api_url(), int(segment["image_id"]), segment=int(segment["id"]), size=size)
    except ApiRequestError:
        return None


def segment_tiles(
    segments: Sequence[dict],
    *,
    key: str,
    columns: int = 4,
    size: int = 256,
    similarities: Sequence[float | None] | None = None,
    on_similar: Callable[[dict], None] | None = None,
    on_open: Callable[[dict], None] | None = None,
    link: Callable[[dict], None] | None = None,
    opened: int | None = None,
) -> None:
    """A grid of segment overlays with score (or similarity) and image; per tile a "Similar segments"
    button when ``on_similar`` is given, an "Open #k" button (the segment's prototype, unless it is the
    ``opened`` one) when ``on_open`` is, and whatever ``link(segment)`` draws (links to other pages)."""
    if not segments:
        st.info("No segments.")
        return
    cols = st.columns(columns)
    for i, seg in enumerate(segments):
        with cols[i % columns]:
            image = segment_overlay(seg, size)
            if image is not None:
                st.image(image, width="stretch")
            else:
                st.warning(f"segment {seg.get('id')}: no image")
            parts = [f"seg {seg.get('id')}", f"img {seg.get('image_id')}"]
            if similarities is not None and similarities[i] is not None:
                parts.append(f"sim {fmt_num(similarities[i])}")
            elif seg.get("score") is not None:
                parts.append(f"score {fmt_num(seg.get('score'))}")
            if seg.get("prototype") is not None:
                parts.append(f"#{seg.get('prototype')}")
            st.caption(" · ".join(parts))
            if on_similar is not None:
                st.button(
                    "Similar segments",
                    key=f"{key}_sim_{seg.get('id')}",
                    on_click=on_similar,
                    args=(seg,),
                    width="stretch",
                )
            if on_open is not None and seg.get("prototype") not in (None, opened):
                st.button(
                    f"Open #{seg['prototype']}",
                    key=f"{key}_open_{seg.get('id')}",
                    on_click=on_open,
                    args=(seg,),
                    width="stretch",
                    help="this segment's prototype, with the segments similar to this one",
                )
            if link is not None:
                link(seg)
