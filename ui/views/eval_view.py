"""One stored unsupervised-segmentation evaluation: scores against the baselines and the paper,
per-class IoU, the confusion matrix and example images (prediction beside ground truth)."""

from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd
import streamlit as st

from ui.client import ApiRequestError, api_url, fetch_eval_examples, fetch_image, get_client
from ui.views.slot_view import decode_image

#: The paper's numbers (SlotCon, COCO-Stuff-27, K=27, 320×320, Hungarian matching; Table 6).
PAPER_REFERENCE = {"protocol": "cocostuff27", "miou": 0.1826, "pixel_accuracy": 0.4236}


def protocol_name(r: dict) -> str:
    """The protocol of a result (``EvalResult.protocol.name``)."""
    return str(r["protocol"]["name"])


def result_name(r: dict) -> str:
    """A short name: ``#3 synthetic · model`` / ``#4 synthetic · kmeans-rgb``."""
    what = "model" if r["baseline"] == "none" else r["baseline"]
    return f"#{r['id']} {protocol_name(r)} · {what}"


def scores_frame(results: list[dict], chosen: dict) -> pd.DataFrame:
    """The chosen result beside the latest baseline of each kind (same protocol) and the paper; scores
    are fractions, as the indexer computes them."""
    rows = [{"method": "SlotCon (this run)", "mIoU": chosen["miou"], "pixel accuracy": chosen["pixel_accuracy"]}]
    for baseline in ("random-init", "kmeans-rgb"):
        same = [r for r in results if r["baseline"] == baseline and protocol_name(r) == protocol_name(chosen)]
        if same:
            r = max(same, key=lambda r: r["id"])
            rows.append({"method": f"baseline: {baseline}", "mIoU": r["miou"], "pixel accuracy": r["pixel_accuracy"]})
    rows.append(
        {
            "method": "paper (COCO-Stuff-27)",
            "mIoU": PAPER_REFERENCE["miou"],
            "pixel accuracy": PAPER_REFERENCE["pixel_accuracy"],
        }
    )
    return pd.DataFrame(rows)


def per_class_frame(r: dict) -> pd.DataFrame:
    """Per-class IoU as a frame (``class``, ``IoU``, ``pixels``), from the indexer's ``per_class`` table."""
    return pd.DataFrame(
        [(c["name"], c["iou"], c["pixels"]) for c in r["per_class"]], columns=["class", "IoU", "pixels"]
    )


def class_confusion(r: dict) -> tuple[np.ndarray, list[str], list[str]] | None:
    """``(matrix, row names, column names)``: the indexer's ``matched_confusion`` (ground-truth class ×
    matched prediction, a last column for clusters matched to no class, dropped when empty)."""
    conf = np.asarray(r["matched_confusion"], dtype=float)
    if conf.size == 0:
        return None
    names = list(r["class_names"])
    if conf.shape[1] > len(names) and conf[:, len(names) :].sum() > 0:
        return conf, names, names + ["unmatched"]
    return conf[:, : len(names)], names, names


def confusion_chart(r: dict) -> alt.Chart | None:
    """The confusion matrix (ground truth × matched prediction), rows normalised."""
    folded = class_confusion(r)
    if folded is None:
        return None
    conf, names, cols = folded
    conf = conf / np.maximum(conf.sum(axis=1, keepdims=True), 1.0)
    ii, jj = np.meshgrid(np.arange(conf.shape[0]), np.arange(conf.shape[1]), indexing="ij")
    frame = pd.DataFrame(
        {
            "ground truth": [names[i] for i in ii.ravel()],
            "prediction": [cols[j] for j in jj.ravel()],
            "share": conf.ravel(),
        }
    )
    return (
        alt.Chart(frame)
        .mark_rect()
        .encode(
            x=alt.X("prediction:N", sort=cols),
            y=alt.Y("ground truth:N", sort=names),
            color=alt.Color("share:Q", scale=alt.Scale(scheme="reds")),
            tooltip=["ground truth", "prediction", alt.Tooltip("share:Q", format=".1%")],
        )
        .properties(height=max(240, 22 * len(names)))
    )


def show_examples(r: dict, limit: int = 6) -> None:
    """Example images: the image, the prediction (matched to classes) and the ground truth. The first
    examples come inline with the result; more are fetched by URL."""
    inline = r["examples"][:limit]
    fetched = [] if len(inline) >= limit else fetch_eval_examples(api_url(), int(r["id"]))[len(inline) : limit]
    if not inline and not fetched:
        st.caption("This evaluation stored no example images.")
        return
    client = get_client()
    rows = [
        (ex["image_id"], lambda ex=ex: (decode_image(ex["prediction"]), decode_image(ex["ground_truth"])))
        for ex in inline
    ]
    rows += [
        (ex["image_id"], lambda ex=ex: (client.fetch_url(ex["pred_url"]), client.fetch_url(ex["gt_url"])))
        for ex in fetched
    ]
    for image_id, maps in rows:
        cols = st.columns(3)
        try:
            pred, gt = maps()
            panels = (
                (fetch_image(api_url(), int(image_id), 256), f"image {image_id}"),
                (pred, "prediction (matched)"),
                (gt, "ground truth"),
            )
        except ApiRequestError as exc:
            st.caption(f"example {image_id}: {exc.message}")
            continue
        for col, (data, caption) in zip(cols, panels, strict=True):
            col.image(data, caption=caption, width="stretch")
