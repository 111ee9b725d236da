"""Concepts: the prototypes as a grid or a 2-D map; opening one shows its top-k segments."""

from __future__ import annotations

import streamlit as st

from ui.client import api_url, fetch_prototypes
from ui.components import run_page
from ui.views.concept_detail import concept_detail
from ui.views.concept_grid import concept_grid
from ui.views.concept_map import concept_map


def open_prototype(k: int) -> None:
    """Opens prototype ``k`` (kept in the session and in the URL, so the view can be shared)."""
    st.session_state["concept"] = k
    st.session_state.pop("similar_to", None)
    st.query_params["prototype"] = str(k)


def close_prototype() -> None:
    """Back to the grid or map."""
    st.session_state["concept"] = None
    st.session_state.pop("similar_to", None)
    st.query_params.pop("prototype", None)


def render() -> None:
    """The page body."""
    protos = fetch_prototypes(api_url())
    if "concept" not in st.session_state and "prototype" in st.query_params:
        st.session_state["concept"] = int(st.query_params["prototype"])
    k = st.session_state.get("concept")
    if k is not None:
        match = [p for p in protos if int(p["id"]) == int(k)]
        if match:
            concept_detail(match[0], close_prototype)
            return
        st.warning(f"Prototype #{k} does not exist in this index.")
    view = st.segmented_control("View", ["Grid", "Map"], default="Grid", key="concepts_view",
                                required=True)
    if view == "Map":
        concept_map(protos, open_prototype)
    else:
        concept_grid(protos, open_prototype)


run_page("Concepts", render)
