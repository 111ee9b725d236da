"""Compare: how the concepts of two indexes of the same images differ (two checkpoints of one run, or
two recipes): matched prototype pairs side by side with their mask IoU, and the splits, merges, born
and died prototypes (``indexer.compare``, served by ``GET /api/compare``)."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from ui.client import (
    ApiRequestError,
    api_url,
    clear_index_caches,
    fetch_best_segment,
    fetch_compare,
    fetch_indexes,
    get_client,
)
from ui.components import call, fmt_num, run_page
from ui.url_state import Param, one_of, publish, restore
from ui.views.index_order import labels, training_order

PAIRS_SHOWN = 12


def _tile(col, index: str, k: int, caption: str) -> None:
    try:
        col.image(fetch_best_segment(api_url(), index, k), caption=caption, width="stretch")
    except ApiRequestError:
        col.caption(f"{caption}: no segment")


def _relation_chart(rels: list[dict], a: str, b: str) -> alt.Chart:
    """One bar per split/merge: its parts' shares of the source, stacked."""
    rows = []
    for r in rels:
        src_side, part_side = (a, b) if r["kind"] == "split" else (b, a)
        for part, share in zip(r["parts"], r["part_coverage"], strict=True):
            rows.append(
                {
                    "relation": f"{r['kind']}: {src_side} #{r['source']}",
                    "part": f"{part_side} #{part}",
                    "share of the source": share,
                }
            )
    return (
        alt.Chart(pd.DataFrame(rows))
        .mark_bar()
        .encode(
            x=alt.X("share of the source:Q", stack="zero", axis=alt.Axis(format="%"), scale=alt.Scale(domain=[0, 1])),
            y=alt.Y("relation:N", title=None),
            color=alt.Color("part:N", legend=None),
            tooltip=["relation", "part", alt.Tooltip("share of the source:Q", format=".1%")],
        )
        .properties(height=max(60, 28 * len(rels)))
    )


def _carry_names(a: str, b: str) -> None:
    """Give A's concept names to their matches in B (the names then belong to B's model)."""
    with st.expander(f"Carry the concept names of {a} over to {b}"):
        overwrite = st.checkbox(f"also replace names {b} already has", key="carry_overwrite")
        if st.button("Carry names over", key="carry_names") and a != b:
            done = call("Carrying the names over", get_client().carry_names, b, a, overwrite)
            if done is not None:
                clear_index_caches()
                st.success(
                    f"{len(done['items'])} names carried over to {b} (matches of IoU ≥ 0.5); {done['skipped']} left "
                    "out (a weaker match, or a name kept)."
                )


def render() -> None:
    """The page body."""
    indexes = sorted(fetch_indexes(api_url()), key=training_order)
    names = [i["name"] for i in indexes]  # earliest checkpoint first
    if len(names) < 2:
        st.info(
            "Comparing needs two indexes of the same images under the server's indexes directory: index "
            "two checkpoints of a run (the Training page, or `slotcon index --out indexes/NAME`)."
        )
        return
    url = [  # by default the two latest checkpoints, the earlier as A
        Param("compare_b", "b", one_of(names), names[-1]),
        Param("compare_a", "a", one_of(names), names[-2]),
    ]
    restore(url)
    c1, c2 = st.columns(2)
    a = c1.selectbox("Index A (earlier)", names, key="compare_a", format_func=labels(indexes).get)
    b = c2.selectbox("Index B (later)", names, key="compare_b", format_func=labels(indexes).get)
    publish(url)
    if a == b:
        st.warning(f"Index A and index B are both **{a}**: choose two different indexes to compare.")
        return
    if training_order(next(i for i in indexes if i["name"] == a)) > training_order(
        next(i for i in indexes if i["name"] == b)
    ):
        st.caption(f"{a} comes from a later checkpoint than {b}: B's concepts are compared with later ones.")
    body = fetch_compare(api_url(), a, b)
    s = body["summary"]
    m = st.columns(6)
    m[0].metric("Matched pairs", s["matched"])
    m[1].metric("Mean IoU", fmt_num(s["mean_iou"], 3))
    m[2].metric("Splits", s["splits"])
    m[3].metric("Merges", s["merges"])
    m[4].metric("Born", s["born"])
    m[5].metric("Died", s["died"])
    st.caption(
        f"{body['num_images']} shared images, {body['num_pixels']:,} pixels; active prototypes: "
        f"{s['active_a']} in {a}, {s['active_b']} in {b}; {s['same_id_matches']} pairs keep their id; "
        f"computed in {body['seconds']:.2f} s."
    )

    st.subheader("Matched prototypes")
    pairs = sorted(body["pairs"], key=lambda p: -p["iou"])
    st.dataframe(
        pd.DataFrame(
            [
                {"A": p["a"], "B": p["b"], "IoU": p["iou"], "pixels A": p["area_a"], "pixels B": p["area_b"]}
                for p in pairs
            ]
        ),
        hide_index=True,
        column_config={"IoU": st.column_config.ProgressColumn("IoU", min_value=0.0, max_value=1.0, format="%.3f")},
    )
    _carry_names(a, b)
    for p in pairs[:PAIRS_SHOWN]:
        cols = st.columns([1, 1, 2])
        _tile(cols[0], a, p["a"], f"{a} #{p['a']}")
        _tile(cols[1], b, p["b"], f"{b} #{p['b']}")
        cols[2].markdown(f"**#{p['a']} → #{p['b']}** · IoU {p['iou']:.3f}")

    st.subheader("Splits and merges")
    rels = body["splits"] + body["merges"]
    if rels:
        st.altair_chart(_relation_chart(rels, a, b), width="stretch")
        for r in rels:
            src, parts = (a, b) if r["kind"] == "split" else (b, a)
            cols = st.columns(1 + min(len(r["parts"]), 5))
            _tile(cols[0], src, r["source"], f"{src} #{r['source']} ({r['kind']})")
            for col, part in zip(cols[1:], r["parts"], strict=False):
                _tile(col, parts, part, f"{parts} #{part}" + (" (absorbed)" if part in r["absorbed"] else ""))
        st.caption(
            "A part lies mostly inside its source and claims at least a tenth of it, or is *absorbed*: it has no "
            "match of its own and lies mostly inside a prototype that continues, however small (docs/compare.md)."
        )
    else:
        st.caption("No prototype split or merged.")
    if body["born"] or body["died"]:
        st.markdown(
            f"**Born** in {b}: {', '.join(f'#{k}' for k in body['born']) or '–'} · "
            f"**died** from {a}: {', '.join(f'#{k}' for k in body['died']) or '–'}"
        )


run_page("Compare", render)
