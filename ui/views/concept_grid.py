"""The Concepts grid: one card per prototype (best segment, activity, label, purity), sortable,
filterable (hide dead, search labels) and paginated: the server filters, orders and pages
(``GET /api/prototypes?sort=&q=&hide_dead=&offset=&limit=``), so a K = 2048 index ships one page."""

from __future__ import annotations

import math
from collections.abc import Callable

import streamlit as st

from ui.client import ApiRequestError, api_url, fetch_dissection, fetch_overlay, fetch_prototype_page, fetch_segment
from ui.components import call, fmt_pct, prototype_title

PER_PAGE = (12, 24, 48, 96)
#: The grid's orders as the selector names them → the API's ``?sort=`` (server.services.prototype_list).
SORTS = {
    "most active": "most_active",
    "least active": "least_active",
    "purity": "purity",
    "label": "label",
    "dissection IoU": "dissection",
    "id": "id",
}


def best_segment_image(p: dict, size: int = 192) -> bytes | None:
    """The overlay of a prototype's best segment (``None`` for a dead prototype)."""
    seg_id = p.get("best_segment_id")
    if seg_id is None:
        return None
    try:
        image_id = p.get("best_image_id")
        if image_id is None:
            image_id = fetch_segment(api_url(), int(seg_id))["image_id"]
        return fetch_overlay(api_url(), int(image_id), segment=int(seg_id), size=size)
    except ApiRequestError:
        return None


def card_caption(p: dict, dissection: dict[int, dict] | None = None) -> str:
    """The text under a card: activity, pixel share, purity where ground truth exists, and the best class and
    IoU of the newest dissection (``dissection``: its rows by prototype)."""
    if p.get("dead"):
        return "dead · active on no image"
    parts = [f"{p.get('num_images', 0)} images", f"{fmt_pct(p.get('pixel_share'))} of pixels"]
    if p.get("purity") is not None:
        cls = p["majority_class_name"]
        parts.append(f"purity {fmt_pct(p.get('purity'), 0)}" + (f" ({cls})" if cls is not None else ""))
    row = (dissection or {}).get(int(p["id"]))
    if row is not None and row["best_class_name"] is not None:
        parts.append(f"IoU {fmt_pct(row['best_iou'], 0)} with {row['best_class_name']}")
    return " · ".join(parts)


def concept_grid(on_open: Callable[[int], None]) -> None:
    """Renders the filter bar, the cards of the current page (one request for the page) and the pager."""
    c1, c2, c3, c4 = st.columns([3, 2, 2, 1.4], vertical_alignment="bottom")
    query = c1.text_input("Search labels", key="concepts_query", placeholder="label, class or #id")
    sort = c2.selectbox("Sort by", list(SORTS), key="concepts_sort")
    per_page = c3.selectbox("Per page", PER_PAGE, key="concepts_per_page")  # defaults: ui/app_pages/concepts.py URL
    hide_dead = c4.checkbox("Hide dead", key="concepts_hide_dead")
    page = max(1, int(st.session_state.get("concepts_page", 1)))
    args = (api_url(), SORTS[sort], query.strip(), bool(hide_dead))
    answer = call("Loading the prototypes", fetch_prototype_page, *args, (page - 1) * per_page, per_page)
    if answer is None:
        return
    pages = max(1, math.ceil(answer["total"] / per_page))
    if page > pages:  # a link's page beyond the last opens the last
        page = pages
        answer = call("Loading the prototypes", fetch_prototype_page, *args, (page - 1) * per_page, per_page)
        if answer is None:
            return
    st.session_state["concepts_page"] = page
    st.caption(
        f"{answer['num_prototypes']} prototypes · {answer['num_dead']} dead · {answer['total']} shown · "
        f"page {page} of {pages}"
    )
    if not answer["total"]:
        st.info("No prototype matches these filters.")
        return
    dis = fetch_dissection(api_url())
    rows = {int(r["prototype"]): r for r in dis["prototypes"]} if dis else {}
    if sort == "dissection IoU" and not dis:
        st.caption("No dissection is stored (`slotcon eval --index DIR --metric dissection`): id order.")
    columns = 6
    chunk = answer["items"]
    for row in range(0, len(chunk), columns):
        cols = st.columns(columns)
        for col, p in zip(cols, chunk[row : row + columns], strict=False):
            with col.container(border=True):
                image = best_segment_image(p)
                if image is not None:
                    st.image(image, width="stretch")
                st.markdown(f"**{prototype_title(p)}**")
                st.caption(card_caption(p, rows))
                st.button("Open", key=f"open_{p['id']}", on_click=on_open, args=(int(p["id"]),), width="stretch")
    if pages > 1:
        st.number_input("Page", min_value=1, max_value=pages, step=1, key="concepts_page")
