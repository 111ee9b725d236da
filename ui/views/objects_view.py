"""Slots as objects and prototypes as concepts: an evaluation's object-discovery scores (FG-ARI, mBO) with its
best and worst images, and the dissection of the prototypes (best class and IoU each, classes found), as
``slotcon eval --metric object-discovery / dissection`` stored them (``indexer.evaluate_objects``)."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from ui.client import ApiRequestError, api_url, fetch_image
from ui.components import fmt_pct
from ui.views.slot_view import decode_image

#: What ``POST /api/eval``'s ``metrics`` can ask for, as the run form names them.
METRIC_NAMES = {
    "segmentation": "semantic segmentation (with the cluster probe)",
    "object-discovery": "object discovery (FG-ARI, mBO)",
    "dissection": "dissection (prototype × class IoU)",
}
DISSECTION_COLUMNS = ["prototype", "name", "best class", "best IoU", "labelled pixels"]


def object_metrics(found: dict) -> list[tuple[str, str, str]]:
    """(label, value, help) of the object-discovery headline: FG-ARI, mBO over images and over instances,
    and the counts they average over."""
    return [
        ("FG-ARI", fmt_pct(found["fg_ari"], 1), f"mean over {found['fg_ari_images']:,} images with foreground"),
        ("mBO (images)", fmt_pct(found["mbo_image"], 1), f"mean over {found['images']:,} images of their mean"),
        ("mBO (instances)", fmt_pct(found["mbo_instance"], 1), f"mean over all {found['instances']:,} instances"),
        (
            "Images · instances",
            f"{found['images']:,} · {found['instances']:,}",
            f"{found['images_without_instances']:,} images without an instance, "
            f"{found['crowd_instances']:,} crowd regions ignored",
        ),
    ]


def example_caption(ex: dict, side: str) -> str:
    """``best · image 4 · FG-ARI 11.5 % · mBO 23.0 % · 3 instances``."""
    return (
        f"{side} · image {ex['image_id']} · FG-ARI {fmt_pct(ex['fg_ari'], 1)} · mBO {fmt_pct(ex['mbo'], 1)} · "
        f"{ex['instances']} instances"
    )


def show_object_discovery(chosen: dict) -> None:
    """The object-discovery section of the Unsupervised segmentation page (nothing when not measured)."""
    found = chosen.get("object_discovery")
    if not found:
        return
    st.subheader("Slots as objects")
    cols = st.columns(4)
    for col, (label, value, why) in zip(cols, object_metrics(found), strict=True):
        col.metric(label, value, help=why)
    if found.get("tag"):
        st.caption(f"Measured as: {found['tag']['label']}")
    st.caption(
        "Slot masks (the prototype argmax on the crop) against the annotated instances: FG-ARI on the pixels "
        "of exactly one instance (background, crowd regions and overlaps left out), mBO the best IoU of "
        "each instance with any slot mask."
    )
    for side, examples in (("best", found["best"]), ("worst", found["worst"])):
        for ex in examples:
            cols = st.columns(3)
            try:
                image = fetch_image(api_url(), int(ex["image_id"]), 256)
            except ApiRequestError:
                image = None
            panels = [
                (image, example_caption(ex, side)),
                (decode_image(ex["slots_png"]), "slot masks"),
                (decode_image(ex["instances_png"]), "instances"),
            ]
            for col, (data, caption) in zip(cols, panels, strict=True):
                if data is not None:
                    col.image(data, caption=caption, width="stretch")
                else:
                    col.caption(caption)


def dissection_frame(dis: dict, names: dict[int, str] | None = None) -> pd.DataFrame:
    """One row per prototype: its name (``names``: the user's labels), best class, best IoU (fraction) and
    labelled pixels, best IoU first."""
    names = names or {}
    rows = [
        {
            "prototype": r["prototype"],
            "name": names.get(r["prototype"], ""),
            "best class": r["best_class_name"] or "–",
            "best IoU": r["best_iou"],
            "labelled pixels": r["pixels"],
        }
        for r in dis["prototypes"]
    ]
    frame = pd.DataFrame(rows, columns=DISSECTION_COLUMNS)
    return frame.sort_values(["best IoU", "prototype"], ascending=[False, True], kind="stable")


def classes_frame(dis: dict) -> pd.DataFrame:
    """One row per class: the best IoU any prototype reaches with it and whether that is above the
    threshold (found)."""
    return pd.DataFrame(
        {
            "class": dis["class_names"],
            "best IoU": dis["class_best_iou"],
            "found": [v > dis["threshold"] for v in dis["class_best_iou"]],
        }
    )


def classes_chart(dis: dict) -> alt.LayerChart:
    """Per class the best prototype IoU as a bar, the threshold as a dashed rule."""
    frame = classes_frame(dis)
    bars = (
        alt.Chart(frame)
        .mark_bar()
        .encode(
            x=alt.X("best IoU:Q", axis=alt.Axis(format="%"), scale=alt.Scale(domain=[0, 1])),
            y=alt.Y("class:N", sort="-x", title=None),
            color=alt.Color("found:N", scale=alt.Scale(domain=[True, False], range=["#2ca02c", "#bbbbbb"])),
            tooltip=["class", alt.Tooltip("best IoU:Q", format=".1%"), "found"],
        )
    )
    threshold = pd.DataFrame({"threshold": [dis["threshold"]]})
    rule = alt.Chart(threshold).mark_rule(strokeDash=[6, 4]).encode(x="threshold:Q")
    return alt.layer(bars, rule).properties(height=max(120, 22 * len(frame)))


def dissection_summary(dis: dict) -> str:
    """``4 of 6 classes found (best prototype IoU above 20 %): disk, box, ...``."""
    found = ", ".join(dis["found_classes"]) or "none"
    return (
        f"**{dis['classes_found']} of {dis['num_classes']} classes found** (some prototype's IoU above "
        f"{fmt_pct(dis['threshold'], 0)}): {found}"
    )


def show_dissection(dis: dict | None, names: dict[int, str] | None = None) -> None:
    """The dissection: classes found, per class the best IoU, per prototype its best class (sortable)."""
    if not dis:
        st.caption("No dissection is stored: run `slotcon eval --index DIR --metric dissection`.")
        return
    st.markdown(dissection_summary(dis))
    if dis.get("tag"):
        st.caption(f"Measured as: {dis['tag']['label']}")
    st.altair_chart(classes_chart(dis), width="stretch")
    st.dataframe(
        dissection_frame(dis, names),
        hide_index=True,
        column_config={"best IoU": st.column_config.NumberColumn(format="percent")},
    )


def prototype_dissection(dis: dict | None, k: int, top: int = 3) -> str | None:
    """A prototype's line in its detail: ``best class disk (IoU 41.0 %); then box 12.0 %, ...``; None when no
    dissection covers ``k``."""
    if not dis:
        return None
    rows = [r for r in dis["prototypes"] if r["prototype"] == k]
    if not rows or rows[0]["best_class"] is None:
        return None
    ranked = sorted(zip(dis["class_names"], rows[0]["iou"], strict=True), key=lambda t: -t[1])
    rest = ", ".join(f"{name} {fmt_pct(v, 1)}" for name, v in ranked[1:top])
    line = f"Dissection: best class **{ranked[0][0]}** (IoU {fmt_pct(ranked[0][1], 1)})"
    return line + (f"; then {rest}" if rest else "")
