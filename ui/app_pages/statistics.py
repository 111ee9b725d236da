"""Slot statistics: dead prototypes, the long tail of activity, active prototypes per image, and
the prototype similarity heatmap with its near-duplicates, and the prototypes dissected against the classes."""

from __future__ import annotations

import streamlit as st

from ui.client import (
    api_url,
    fetch_dissection,
    fetch_options,
    fetch_prototypes,
    fetch_similarity,
    fetch_similarity_png,
    fetch_stats,
)
from ui.components import fmt_num, run_page
from ui.url_state import Param, number, publish, restore
from ui.views.objects_view import show_dissection
from ui.views.stats_charts import (
    MAX_INTERACTIVE_HEATMAP,
    active_histogram,
    activity_frame,
    heatmap_chart,
    histogram_chart,
    long_tail_chart,
    near_duplicates,
    similarity_matrix,
)


def render() -> None:
    """The page body."""
    protos = fetch_prototypes(api_url())
    url = [
        Param(
            "dup_threshold", "duplicates", number(0.5, 1.0), float(fetch_options(api_url())["near_duplicate_threshold"])
        )
    ]
    restore(url)
    threshold = float(st.session_state["dup_threshold"])
    stats = fetch_stats(api_url(), threshold)
    dead = stats["dead"]
    hist = active_histogram(stats)
    mean_active = stats["active_per_image"]["mean"]
    m = st.columns(4)
    m[0].metric("Prototypes", stats["num_prototypes"])
    m[1].metric("Dead prototypes", stats["num_dead"])
    m[2].metric("Images", stats["num_images"])
    m[3].metric("Active prototypes per image", fmt_num(mean_active, 2))
    st.caption(
        "A prototype is *active* on an image when it is the argmax at one pixel or more, and "
        "*dead* when it is active on no image. The paper: 40 of 256 dead on COCO val2017 (App. D); its "
        '"about 7 active slots per image" (Fig. 4) is measured on training crops during pretraining, '
        "not on val2017, so compare it with the training page's active slots per view, not with this "
        "number (counted on the centre crops of the indexed images)."
    )

    st.subheader("Dead prototypes")
    if dead:
        st.write(", ".join(f"#{k}" for k in dead))
    else:
        st.success("No dead prototype: every prototype is the argmax somewhere.")

    st.subheader("Activity of each prototype (long tail)")
    frame = activity_frame(protos)
    if not frame.empty:
        st.altair_chart(long_tail_chart(frame), width="stretch")

    st.subheader("Active prototypes per image")
    if hist.empty:
        st.info("The API sent no per-image statistics.")
    else:
        st.altair_chart(histogram_chart(hist), width="stretch")

    st.subheader("Prototype similarity")
    if stats["num_prototypes"] <= MAX_INTERACTIVE_HEATMAP:
        labels = {int(p["id"]): p.get("label") or "" for p in protos}
        st.altair_chart(heatmap_chart(similarity_matrix(fetch_similarity(api_url())), labels), width="content")
    else:
        st.image(
            fetch_similarity_png(api_url()),
            width=720,
            caption=f"{stats['num_prototypes']} × {stats['num_prototypes']} cosines (blue −1, white 0, red 1; "
            "each pixel is the largest cosine of its block of pairs)",
        )
    st.slider("Near-duplicate threshold (cosine)", 0.5, 1.0, step=0.01, key="dup_threshold")
    publish(url)
    dups = near_duplicates(stats)
    st.markdown(f"**{len(dups)} near-duplicate pairs** (cosine ≥ {threshold:.2f})")
    if not dups.empty:
        st.dataframe(dups, hide_index=True, column_config={"cosine": st.column_config.NumberColumn(format="%.3f")})

    st.subheader("Prototypes as concepts (dissection)")
    show_dissection(fetch_dissection(api_url()), {int(p["id"]): p.get("label") or "" for p in protos})


run_page("Slot statistics", render)
