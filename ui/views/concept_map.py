"""The map of concepts: the prototype vectors projected to 2-D by the server (cached there), each
point showing its best segment on hover; clicking one opens it."""

from __future__ import annotations

import base64
from collections.abc import Callable
from functools import partial

import altair as alt
import pandas as pd
import streamlit as st

from ui.client import api_url, fetch_prototype_map
from ui.views.concept_grid import best_segment_image


def map_frame(answer: dict, protos: list[dict]) -> pd.DataFrame:
    """The ``PrototypeMap`` answer joined with the prototype records: one row per prototype."""
    by_id = {int(p["id"]): p for p in protos}
    rows = []
    for pt in answer["points"]:
        k, p = pt["id"], by_id.get(pt["id"], {})
        label = pt["label"] or ""
        rows.append(
            {
                "id": k,
                "x": pt["x"],
                "y": pt["y"],
                "label": label,
                "name": f"#{k} {label}".strip(),
                "state": "dead" if pt["dead"] else "active",
                "images": int(p.get("num_images") or 0),
            }
        )
    return pd.DataFrame(rows)


def _thumbnail_uri(p: dict) -> str:
    data = best_segment_image(p, size=112)
    return "" if data is None else "data:image/jpeg;base64," + base64.b64encode(data).decode()


def concept_map(protos: list[dict], on_open: Callable[[int], None]) -> None:
    """Renders the scatter plot; a click on a point calls ``on_open(prototype_id)``."""
    answer = fetch_prototype_map(api_url())
    frame = map_frame(answer, protos)
    if frame.empty:
        st.info("The map is empty: the index has no prototypes.")
        return
    method = answer["method"]
    st.caption(
        f"Prototype vectors in 2-D ({str(method).upper()}, computed by the server). "
        "Hover a point for its best segment, click it to open the concept."
    )
    by_id = {int(p["id"]): p for p in protos}
    frame["image"] = [_thumbnail_uri(by_id.get(k, {})) for k in frame["id"]]
    pick = alt.selection_point(fields=["id"], name="pick", on="click")
    chart = (
        alt.Chart(frame)
        .mark_circle(opacity=0.85, stroke="#333", strokeWidth=0.5)
        .encode(
            x=alt.X("x:Q", title=None, axis=alt.Axis(labels=False, ticks=False)),
            y=alt.Y("y:Q", title=None, axis=alt.Axis(labels=False, ticks=False)),
            size=alt.Size("images:Q", title="images active", scale=alt.Scale(range=[40, 400])),
            color=alt.Color("state:N", scale=alt.Scale(domain=["active", "dead"], range=["#d62728", "#aaaaaa"])),
            tooltip=[
                alt.Tooltip("name:N", title="prototype"),
                alt.Tooltip("images:Q"),
                alt.Tooltip("image:N", title="image"),
            ],
        )
        .add_params(pick)
        .properties(height=520)
    )
    text = alt.Chart(frame).mark_text(dy=-10, fontSize=10, color="#444").encode(x="x:Q", y="y:Q", text="label:N")
    # A fresh key after each opening: the chart comes back with no selection, so the point opened last
    # opens again on its next click (a kept selection would not change, and so would not fire).
    key = f"concept_map_{st.session_state.get(MAP_GENERATION, 0)}"
    st.altair_chart(
        chart + text,
        key=key,
        on_select=partial(_picked, key, on_open),
        selection_mode="pick",
        width="stretch",
    )


#: Session key counting the map's openings (part of the chart's key).
MAP_GENERATION = "concept_map_generation"


def _picked(key: str, on_open: Callable[[int], None]) -> None:
    """The chart's selection callback: opens the clicked point's prototype."""
    state = st.session_state.get(key) or {}
    selected = (state.get("selection") or {}).get("pick") or []
    k = selected[0].get("id") if selected else None
    if k is None:
        return
    st.session_state[MAP_GENERATION] = st.session_state.get(MAP_GENERATION, 0) + 1
    on_open(int(k))
