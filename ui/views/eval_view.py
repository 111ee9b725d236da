"""One stored unsupervised-segmentation evaluation: scores against the baselines and the paper,
per-class IoU, the confusion matrix and example images (prediction beside ground truth)."""

from __future__ import annotations

import io

import altair as alt
import numpy as np
import pandas as pd
import streamlit as st
from PIL import Image

from ui.client import ApiRequestError, api_url, fetch_eval_examples, fetch_image, get_client
from ui.components import colour_swatch, plain
from ui.views.slot_view import decode_image

MATCHING_NAMES = {"cluster-probe": "cluster probe"}  # the others read as they are
SCORE_COLUMNS = ["method", "mIoU", "± mIoU", "pixel accuracy", "± pixel accuracy", "protocol", "against the paper"]


def protocol_name(r: dict) -> str:
    """The protocol of a result (``EvalResult.protocol.name``)."""
    return str(r["protocol"]["name"])


def result_name(r: dict) -> str:
    """A name a person reads, by model, protocol and baseline, numbered as an evaluation (not a job):
    ``evaluation 3 · cpu-demo/final.pth · synthetic`` / ``evaluation 4 · baseline kmeans-rgb · synthetic``."""
    checkpoint = (r.get("checkpoint") or {}).get("path")
    if r["baseline"] == "none":
        what = checkpoint or "the model"
    elif r["baseline"] == "random-init":
        what = "baseline random-init" + (f" ({checkpoint}'s architecture)" if checkpoint else "")
    else:
        what = f"baseline {r['baseline']}"
    return f"evaluation {r['id']} · {what} · {protocol_name(r)}"


def differences_text(check: dict) -> str:
    """``same protocol``, or each field that differs: ``K 8 (paper 27); resolution 64 (paper 320)``."""
    if check["comparable"]:
        return "same protocol"
    return "; ".join(f"{d['field']} {d['ours']} (paper {d['reference']})" for d in check["differences"])


def _score_row(score: dict, who: str) -> dict:
    return {
        "method": f"{who} · {MATCHING_NAMES.get(score['matching'], score['matching'])}",
        "mIoU": score["miou"],
        "± mIoU": score["miou_std"],
        "pixel accuracy": score["pixel_accuracy"],
        "± pixel accuracy": score["pixel_accuracy_std"],
        "protocol": score["tag"]["label"],
        "against the paper": differences_text(score["paper"]),
    }


def _paper_row(paper: dict) -> dict:
    return {
        "method": f"{paper['name']}, {paper['source'].rsplit(', ', 1)[-1]}",
        "mIoU": paper["miou"],
        "± mIoU": None,
        "pixel accuracy": paper["pixel_accuracy"],
        "± pixel accuracy": None,
        "protocol": paper["tag"]["label"],
        "against the paper": "the paper's row",
    }


def scores_frame(results: list[dict], chosen: dict, paper: dict) -> pd.DataFrame:
    """The chosen result's scores side by side (one-to-one, many-to-one, the cluster probe), then the latest
    baseline of each kind on the same benchmark, each with its protocol; the paper's row only right after
    the first score measured exactly as the paper's (its ``paper.comparable``), never elsewhere. Scores are
    fractions, as the indexer computes them; ``±`` the standard deviation over seeds (empty for one run)."""
    who = "SlotCon (this run)" if chosen["baseline"] == "none" else f"{chosen['baseline']} (this run)"
    scored = [(s, who) for s in chosen["scores"]]
    for baseline in ("random-init", "kmeans-rgb"):
        same = [r for r in results if r["baseline"] == baseline and protocol_name(r) == protocol_name(chosen)]
        if same and baseline != chosen["baseline"]:
            latest = max(same, key=lambda r: r["id"])
            scored += [(s, f"baseline {baseline} #{latest['id']}") for s in latest["scores"]]
    rows, paper_drawn = [], False
    for score, name in scored:
        rows.append(_score_row(score, name))
        if score["paper"]["comparable"] and not paper_drawn:
            rows.append(_paper_row(paper))
            paper_drawn = True
    frame = pd.DataFrame(rows, columns=SCORE_COLUMNS)
    for column in ("± mIoU", "± pixel accuracy"):  # NaN, an empty cell, where there is no std (one run)
        frame[column] = frame[column].astype(float)
    return frame


def paper_reference(chosen: dict, paper: dict) -> str | None:
    """None when a score of ``chosen`` is measured as the paper's (the row is then in the table); else the
    reference line: the paper's numbers, how they were measured and what differs from this result's
    headline (one-to-one) score."""
    if any(s["paper"]["comparable"] for s in chosen["scores"]):
        return None
    return (
        f"Reference only, not a comparison: {paper['name']} ({paper['source']}) reports "
        f"{paper['miou']:.2%} mIoU and {paper['pixel_accuracy']:.2%} pixel accuracy, measured as "
        f"{paper['tag']['label']}. This evaluation's one-to-one score differs in: "
        f"{differences_text(chosen['scores'][0]['paper'])}."
    )


def _tag_columns(tag: dict) -> dict:
    images = tag["image_list"]
    return {
        "benchmark": tag["benchmark"], "image list": images["name"], "images used": images["used"],
        "images listed": images["listed"], "images missing": images["missing"], "K": tag["k"],
        "matching": tag["matching"], "resolution": tag["resolution"], "crop": tag["crop"], "CRF": tag["crf"],
        "seeds": tag["seeds"],
    }  # fmt: skip


def export_frame(chosen: dict, paper: dict) -> pd.DataFrame:
    """The chosen result's scores and the paper's row for download, one column per tag field, with each
    seed's numbers and whether the paper's row is comparable with the score."""
    rows = []
    for s in chosen["scores"]:
        rows.append({
            "method": s["method"], "mIoU": s["miou"], "mIoU std": s["miou_std"],
            "pixel accuracy": s["pixel_accuracy"], "pixel accuracy std": s["pixel_accuracy_std"],
            **_tag_columns(s["tag"]), "seed values": " ".join(str(r["seed"]) for r in s["runs"]),
            "per-seed mIoU": " ".join(f"{r['miou']:.6f}" for r in s["runs"] if r["miou"] is not None),
            "paper comparable": s["paper"]["comparable"], "differs from the paper": differences_text(s["paper"]),
        })  # fmt: skip
    rows.append({
        "method": f"{paper['name']} ({paper['source']})", "mIoU": paper["miou"],
        "pixel accuracy": paper["pixel_accuracy"], **_tag_columns(paper["tag"]),
    })  # fmt: skip
    return pd.DataFrame(rows)


def scores_charts(frame: pd.DataFrame, paper: dict, reference: bool) -> list[alt.LayerChart]:
    """One chart per score (mIoU, pixel accuracy), each as wide as the page: a bar per row of ``frame``, named
    in full, with its ± std over seeds; the paper is a bar when it is in ``frame`` (same protocol), a dashed
    rule named "reference" when ``reference`` (another protocol)."""
    order = list(frame["method"])
    panels = []
    for score, std, ref_value in (
        ("mIoU", "± mIoU", paper["miou"]),
        ("pixel accuracy", "± pixel accuracy", paper["pixel_accuracy"]),
    ):
        sd = frame[std].astype(float).fillna(0.0)
        data = pd.DataFrame(
            {"method": frame["method"], "value": frame[score].astype(float), "low": frame[score] - sd,
             "high": frame[score] + sd}
        ).dropna(subset=["value"])  # fmt: skip
        base = alt.Chart(data).encode(y=alt.Y("method:N", sort=order, title=None, axis=alt.Axis(labelLimit=400)))
        layers = [
            base.mark_bar().encode(
                x=alt.X("value:Q", axis=alt.Axis(format="%"), title=score),
                color=alt.Color("method:N", legend=None),
                tooltip=["method", alt.Tooltip("value:Q", format=".2%")],
            ),
            base.mark_rule().encode(x="low:Q", x2="high:Q"),
        ]
        if reference:
            ref = pd.DataFrame({"value": [ref_value], "what": ["paper: reference, measured another way"]})
            layers.append(
                alt.Chart(ref).mark_rule(strokeDash=[6, 4], color="black").encode(x="value:Q", tooltip=["what"])
            )
        # the height holds the axis too when the chart is fitted to the page's width: 26 px a bar, 60 for the axis
        panels.append(alt.layer(*layers).properties(height=60 + 26 * len(order)))
    return panels


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
    base = alt.Chart(frame).encode(x=alt.X("prediction:N", sort=cols), y=alt.Y("ground truth:N", sort=names))
    cells = base.mark_rect().encode(
        color=alt.Color("share:Q", scale=alt.Scale(scheme="reds")),
        tooltip=["ground truth", "prediction", alt.Tooltip("share:Q", format=".1%")],
    )
    # each cell's share written in it (white on the dark cells); empty cells stay blank
    numbers = (
        base.transform_filter(alt.datum.share >= 0.005)
        .mark_text(fontSize=11 if len(names) <= 12 else 8)
        .encode(
            text=alt.Text("share:Q", format=".0%"),
            color=alt.condition(alt.datum.share > 0.5, alt.value("white"), alt.value("black")),
        )
    )
    return (cells + numbers).properties(height=max(240, 22 * len(names)))


def class_legend(maps: list[bytes], class_names: list[str]) -> list[tuple[str, str]]:
    """``(colour #rrggbb, class name)`` of each class drawn in the palette PNGs ``maps`` (predictions and
    ground truths), read from the images' own palette; unlabelled pixels (255) are left out."""
    seen: set[int] = set()
    colours: dict[int, str] = {}
    for data in maps:
        try:
            img = Image.open(io.BytesIO(data))
        except (OSError, ValueError):
            continue
        if img.mode != "P" or img.getpalette() is None:
            continue
        pal = img.getpalette()
        for c in np.unique(np.asarray(img)).tolist():
            if c < len(class_names) and c not in seen:
                seen.add(c)
                colours[c] = "#{:02x}{:02x}{:02x}".format(*pal[3 * c : 3 * c + 3])
    return [(colours[c], class_names[c]) for c in sorted(seen)]


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
    legend = st.empty()  # drawn once the examples' maps are read: the classes they show
    drawn: list[bytes] = []
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
        drawn += [m for m in (pred, gt) if m]
        for col, (data, caption) in zip(cols, panels, strict=True):
            col.image(data, caption=caption, width="stretch")
    entries = class_legend(drawn, list(r.get("class_names") or []))
    if entries:
        legend.markdown(
            "Classes: " + " ".join(colour_swatch(c, plain(name)) + "&emsp;" for c, name in entries),
            unsafe_allow_html=True,
        )
