"""One prototype opened: its numbers, a field to name the concept, its top-k segments (more on
demand) and the segments similar to any one of them."""

from __future__ import annotations

from functools import partial

import streamlit as st

from ui.client import (
    ApiRequestError,
    api_url,
    clear_index_caches,
    fetch_dissection,
    fetch_health,
    fetch_neighbors,
    fetch_segment,
    fetch_segments,
    get_client,
)
from ui.components import call, fmt_pct, prototype_title, scroll_to
from ui.views.objects_view import prototype_dissection
from ui.views.segments import segment_tiles

PAGE = 12
#: The embeddings "similar segments" can be searched in (the API's ``space``), as the selector names them.
SPACE_LABELS = {
    "encoder": "Encoder features (pre-projector)",
    "projector": "Projector (what the prototypes score)",
}
SPACE_HELP = {
    "encoder": "cosine of the segments' backbone features, averaged over each segment: segments of one concept "
    "still differ here, so the ranking shows which are alike",
    "projector": "cosine of the segments' pooled projections, the space the prototypes score: after training a "
    "prototype's segments are nearly identical here (similarities of 0.99+)",
}
#: The space a link without ``?space=`` opens: the encoder's, where neighbours differ (when the index has it).
DEFAULT_SPACE = "encoder"


#: Session keys of the similar-segments panel: the segment it is open for (also the link's ``?segment=``),
#: the prototype it belongs to (the panel shows under that prototype only) and a one-shot "scroll to it".
SIMILAR_TO, SIMILAR_UNDER, SIMILAR_SCROLL = "similar_to", "similar_under", "similar_scroll"
SIMILAR_ANCHOR = "similar-segments"


def _similar_to(k: int, segment: dict) -> None:
    st.session_state[SIMILAR_TO] = int(segment["id"])
    st.session_state[SIMILAR_UNDER] = k
    st.session_state[SIMILAR_SCROLL] = True


def _more(k: int) -> None:
    st.session_state[f"topk_{k}"] = st.session_state.get(f"topk_{k}", PAGE) + PAGE


def label_form(p: dict) -> None:
    """A form that names (or with an empty name, un-names) the concept through the API."""
    k = int(p["id"])
    with st.form(f"label_form_{k}", border=False):
        c1, c2 = st.columns([4, 1], vertical_alignment="bottom")
        name = c1.text_input(
            "Concept name",
            value=p.get("label") or "",
            key=f"label_{k}",
            placeholder="e.g. sky, wheel, bullseye texture",
        )
        if c2.form_submit_button("Save name", width="stretch"):
            updated = call("Saving the name", get_client().set_label, k, name.strip() or None)
            if updated is not None:
                clear_index_caches()
                st.toast(f"Prototype #{k} is now {name.strip() or 'unnamed'!r}")
                st.rerun()


def figure_export(k: int) -> None:
    """The paper's figure of this concept (and any others listed) as PNG, PDF or SVG, made by the API."""
    with st.expander("Figure for a paper", expanded=False):
        c1, c2, c3 = st.columns([3, 1, 1], vertical_alignment="bottom")
        spec = c1.text_input("Prototypes", value=str(k), key=f"fig_protos_{k}", help="ids and ranges: 3,17,42 or 3-5")
        topk = c2.number_input("Top-k", 1, 20, 10, key=f"fig_topk_{k}")
        fmt = c3.selectbox("Format", ["png", "pdf", "svg"], key=f"fig_fmt_{k}")
        if st.button("Make figure", key=f"fig_make_{k}"):
            data = call("Drawing the figure", get_client().figure, spec, int(topk), fmt)
            if data is not None:
                st.session_state[f"fig_{k}"] = (spec, fmt, data)
        made = st.session_state.get(f"fig_{k}")
        if made is not None:
            spec_made, fmt_made, data = made
            st.download_button(
                f"Download concepts-{spec_made}.{fmt_made}", data, f"concepts-{spec_made}.{fmt_made}", key=f"fig_dl_{k}"
            )
            if fmt_made == "png":
                st.image(data, width="stretch")


def index_spaces() -> list[str]:
    """The embeddings the served index can search (``/api/health``), the encoder's first."""
    try:
        index = fetch_health(api_url()).get("index") or {}
    except ApiRequestError:
        index = {}
    have = index.get("spaces") or ["projector"]
    return [s for s in SPACE_LABELS if s in have]


def neighbour_space() -> str:
    """The selector of the embedding similar segments are searched in; returns the chosen space."""
    spaces = index_spaces()
    if st.session_state.get("neighbour_space") not in spaces:
        st.session_state["neighbour_space"] = spaces[0]  # e.g. a link's ?space=encoder on an index without it
    space = st.radio(
        "Similarity in",
        spaces,
        key="neighbour_space",
        format_func=SPACE_LABELS.get,
        horizontal=True,
        help="Which embedding of the segments the neighbours are searched in.",
    )
    note = SPACE_HELP[space]
    if len(spaces) == 1:
        note += " (this index stores no encoder features: rebuild it without --no-encoder-vectors to add them)"
    st.caption(f"Similarity: {note}.")
    return space


def concept_detail(p: dict, on_back) -> None:
    """Renders an opened prototype ``p`` (a record from ``/api/prototypes``)."""
    k = int(p["id"])
    st.button("← All concepts", on_click=on_back)
    st.subheader(f"Prototype {prototype_title(p)}")
    m = st.columns(5)
    m[0].metric("Images active", p.get("num_images", 0))
    m[1].metric("Segments", p.get("num_segments", 0))
    m[2].metric("Pixel share", fmt_pct(p.get("pixel_share"), 2))
    m[3].metric("Purity", fmt_pct(p.get("purity"), 0) if p.get("purity") is not None else "–")
    cls = p["majority_class_name"]
    m[4].metric("Majority class", "–" if cls is None else str(cls))
    line = prototype_dissection(fetch_dissection(api_url()), k)
    if line is not None:
        st.markdown(line)
    label_form(p)
    figure_export(k)
    if p.get("dead"):
        st.info("This prototype is dead: it is the argmax at no pixel of the indexed images.")
        return

    limit = st.session_state.get(f"topk_{k}", PAGE)
    segments = fetch_segments(api_url(), k, 0, limit)
    st.markdown(f"#### Top {len(segments)} segments")
    segment_tiles(segments, key=f"top_{k}", on_similar=partial(_similar_to, k))
    if len(segments) >= limit:
        st.button("Show more segments", on_click=_more, args=(k,))

    similar_panel(k)


def similar_panel(k: int) -> None:
    """The segments similar to the chosen one, under prototype ``k`` only (a panel opened under another
    prototype is dropped); scrolled to, and announced, when just asked for."""
    source_id = st.session_state.get(SIMILAR_TO)
    if source_id is None:
        return
    if st.session_state.get(SIMILAR_UNDER) != k:
        st.session_state[SIMILAR_TO] = None
        return
    try:
        source = fetch_segment(api_url(), int(source_id))
    except ApiRequestError as exc:
        st.warning(f"Segment {source_id}: {exc.message}")
        st.session_state[SIMILAR_TO] = None
        return
    st.html(f"<span id='{SIMILAR_ANCHOR}'></span>", width="content")
    st.divider()
    st.markdown(f"#### Segments similar to segment {source['id']} (image {source['image_id']})")
    space = neighbour_space()
    items = [(n["segment"], n["similarity"]) for n in fetch_neighbors(api_url(), int(source["id"]), 12, space)]
    if st.session_state.pop(SIMILAR_SCROLL, False):
        st.toast(f"{len(items)} segments similar to segment {source['id']}, below the top segments")
        scroll_to(SIMILAR_ANCHOR)
    segment_tiles(
        [s for s, _ in items],
        key="neighbors",
        similarities=[d for _, d in items],
        on_similar=partial(_similar_to, k),
        on_open=_open_segment,
        opened=k,
    )


def _open_segment(segment: dict) -> None:
    """Opens the prototype a neighbour belongs to, with the segments similar to that neighbour."""
    k = segment.get("prototype")
    if k is None:
        return
    st.session_state["concept"] = int(k)
    _similar_to(int(k), segment)
