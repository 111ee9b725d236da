"""One stored unsupervised-segmentation evaluation: scores against the baselines and the paper,
per-class IoU, the confusion matrix and example images (prediction beside ground truth)."""

from __future__ import annotations

from typing import Any

import altair as alt
import numpy as np
import pandas as pd
import streamlit as st

from ui.client import ApiError, api_url, fetch_eval_examples, fetch_image, get_client
from ui.views.slot_view import decode_image

#: The paper's numbers (SlotCon, COCO-Stuff-27, K=27, 320×320, Hungarian matching; Table 6).
PAPER_REFERENCE = {"protocol": "cocostuff27", "miou": 0.1826, "pixel_accuracy": 0.4236}


def as_fraction(x: Any) -> float | None:
    """Scores may be sent as fractions or as percentages; the UI works in fractions."""
    if x is None:
        return None
    x = float(x)
    return x / 100.0 if x > 1.0 else x


def protocol_name(r: dict) -> str:
    """The protocol of a result, sent as a name or as ``{"name": ...}``."""
    p = r.get("protocol")
    return str(p.get("name", "?")) if isinstance(p, dict) else str(p or "?")


def result_name(r: dict) -> str:
    """A short name: ``#3 synthetic · model`` / ``#4 synthetic · kmeans-rgb``."""
    baseline = r.get("baseline") or "none"
    what = "model" if baseline in ("none", None) else baseline
    return f"#{r.get('id', '?')} {protocol_name(r)} · {what}"


def scores_frame(results: list[dict], chosen: dict) -> pd.DataFrame:
    """The chosen result beside the latest baseline of each kind (same protocol) and the paper."""
    rows = [{"method": "SlotCon (this run)", "mIoU": as_fraction(chosen.get("miou")),
             "pixel accuracy": as_fraction(chosen.get("pixel_accuracy"))}]
    for baseline in ("random-init", "kmeans-rgb"):
        same = [r for r in results if r.get("baseline") == baseline
                and protocol_name(r) == protocol_name(chosen)]
        if same:
            r = max(same, key=lambda r: r.get("id", 0))
            rows.append({"method": f"baseline: {baseline}", "mIoU": as_fraction(r.get("miou")),
                         "pixel accuracy": as_fraction(r.get("pixel_accuracy"))})
    rows.append({"method": "paper (COCO-Stuff-27)", "mIoU": PAPER_REFERENCE["miou"],
                 "pixel accuracy": PAPER_REFERENCE["pixel_accuracy"]})
    return pd.DataFrame(rows)


def class_names(r: dict, n: int) -> list[str]:
    """The class names of an evaluation (``class 0`` ... when not sent)."""
    names = r.get("class_names") or r.get("classes") or []
    names = [c.get("name", str(c)) if isinstance(c, dict) else str(c) for c in names]
    return names if len(names) == n else [f"class {i}" for i in range(n)]


def per_class_frame(r: dict) -> pd.DataFrame:
    """Per-class IoU as a frame (``class``, ``IoU``), from a list or a ``{name: iou}`` map."""
    raw = r.get("per_class_iou") or []
    if isinstance(raw, dict):
        pairs = [(str(k), as_fraction(v)) for k, v in raw.items()]
    else:
        names = class_names(r, len(raw))
        pairs = [(names[i], as_fraction(v)) for i, v in enumerate(raw)]
    return pd.DataFrame(pairs, columns=["class", "IoU"])


def class_confusion(r: dict) -> tuple[np.ndarray, list[str], list[str]] | None:
    """``(matrix, row names, column names)``: ground-truth classes × matched predictions. A
    ``clusters x classes`` matrix is folded through the Hungarian ``matching`` (cluster → class);
    clusters matched to no class form an "unmatched" column."""
    raw = r.get("confusion")
    if isinstance(raw, dict):
        raw = raw.get("matrix")
    if not raw:
        return None
    conf = np.asarray(raw, dtype=float)
    if r.get("confusion_layout") == "clusters x classes":
        conf = conf.T  # → classes × clusters
        matching = {int(k): int(c) for k, c in (r.get("matched_pairs") or [])}
        if not matching and r.get("matching"):
            matching = {k: int(c) for k, c in enumerate(r["matching"]) if c is not None and int(c) >= 0}
        n = conf.shape[0]
        folded = np.zeros((n, n + 1))
        for k in range(conf.shape[1]):
            c = matching.get(k)
            folded[:, c if c is not None and c < n else n] += conf[:, k]
        names = class_names(r, n)
        if folded[:, n].sum() == 0:
            return folded[:, :n], names, names
        return folded, names, names + ["unmatched"]
    names = class_names(r, conf.shape[0])
    cols = names if conf.shape[1] == conf.shape[0] else [f"pred {j}" for j in range(conf.shape[1])]
    return conf, names, cols


def confusion_chart(r: dict) -> alt.Chart | None:
    """The confusion matrix (ground truth × matched prediction), rows normalised."""
    folded = class_confusion(r)
    if folded is None:
        return None
    conf, names, cols = folded
    conf = conf / np.maximum(conf.sum(axis=1, keepdims=True), 1.0)
    ii, jj = np.meshgrid(np.arange(conf.shape[0]), np.arange(conf.shape[1]), indexing="ij")
    frame = pd.DataFrame({"ground truth": [names[i] for i in ii.ravel()],
                          "prediction": [cols[j] for j in jj.ravel()], "share": conf.ravel()})
    return alt.Chart(frame).mark_rect().encode(
        x=alt.X("prediction:N", sort=cols), y=alt.Y("ground truth:N", sort=names),
        color=alt.Color("share:Q", scale=alt.Scale(scheme="reds")),
        tooltip=["ground truth", "prediction", alt.Tooltip("share:Q", format=".1%")],
    ).properties(height=max(240, 22 * len(names)))


def show_examples(r: dict, limit: int = 6) -> None:
    """Example images: the image, the prediction (matched to classes) and the ground truth."""
    if r.get("id") is None:
        return
    examples = r.get("examples") or fetch_eval_examples(api_url(), int(r["id"]))
    if not examples:
        st.caption("This evaluation stored no example images.")
        return
    client = get_client()
    for ex in examples[:limit]:
        cols = st.columns(3)
        image_id = ex.get("image_id")
        try:
            pred = decode_image(ex.get("prediction")) or client.fetch_url(ex["pred_url"])
            gt = decode_image(ex.get("ground_truth")) or client.fetch_url(ex["gt_url"])
            panels = ((fetch_image(api_url(), int(image_id), 256), f"image {image_id}"),
                      (pred, "prediction (matched)"), (gt, "ground truth"))
        except ApiError as exc:
            st.caption(f"example {image_id}: {exc.message}")
            continue
        for col, (data, caption) in zip(cols, panels, strict=True):
            col.image(data, caption=caption, width="stretch")
