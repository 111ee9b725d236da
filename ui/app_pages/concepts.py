"""Concepts: the prototypes as a grid or a 2-D map; opening one shows its top-k segments."""

from __future__ import annotations

import streamlit as st

from ui.client import ApiRequestError, api_url, fetch_prototype, fetch_prototypes
from ui.components import run_page, show_api_error
from ui.url_state import Param, flag, integer, one_of, publish, restore
from ui.views.concept_detail import DEFAULT_SPACE, SIMILAR_UNDER, SPACE_LABELS, concept_detail
from ui.views.concept_grid import PER_PAGE, SORTS, concept_grid
from ui.views.concept_map import concept_map

#: What a link to this page carries: the open prototype and segment, the view and the grid's filters.
URL = [
    Param("concept", "prototype", integer()),
    Param("similar_to", "segment", integer()),
    Param("neighbour_space", "space", one_of(list(SPACE_LABELS)), DEFAULT_SPACE),
    Param("concepts_view", "view", one_of(["Grid", "Map"]), "Grid"),
    Param("concepts_query", "q", str, ""),
    Param("concepts_sort", "sort", one_of(list(SORTS)), next(iter(SORTS))),
    Param("concepts_per_page", "per_page", one_of(PER_PAGE), 24),
    Param("concepts_hide_dead", "hide_dead", flag, True),
    Param("concepts_page", "page", integer(1), 1),
]


def open_prototype(k: int) -> None:
    """Opens prototype ``k`` (kept in the session and in the URL, so the view can be shared)."""
    st.session_state["concept"] = k
    st.session_state["similar_to"] = None  # None, not deleted: the URL's old segment must not come back


def close_prototype() -> None:
    """Back to the grid or map."""
    st.session_state["concept"] = None
    st.session_state["similar_to"] = None  # None, not deleted: the URL's old segment must not come back


def render() -> None:
    """The page body, its state read from and written back to the URL."""
    if restore(URL):  # a link, Back or Forward: the segment in the URL belongs to the prototype in it
        st.session_state[SIMILAR_UNDER] = st.session_state.get("concept")
    try:
        _body()
    finally:
        publish(URL)


def _body() -> None:
    k = st.session_state.get("concept")
    if k is not None:
        try:
            record = fetch_prototype(api_url(), int(k))
        except ApiRequestError as exc:
            if exc.status != 404:
                show_api_error(exc, "Loading the prototype")
                return
            record = None
        if record is not None:
            concept_detail(record, close_prototype)
            return
        st.warning(f"Prototype #{k} does not exist in this index.")
    view = st.segmented_control("View", ["Grid", "Map"], key="concepts_view", required=True)
    if view == "Map":
        concept_map(fetch_prototypes(api_url()), open_prototype)  # the map draws every prototype
    else:
        concept_grid(open_prototype)  # one page, from the server


run_page("Concepts", render)
