"""Charts of the slot statistics: the long tail of prototype activity, the histogram of active
prototypes per image, and the prototype-similarity heatmap."""

from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd


def activity_frame(protos: list[dict]) -> pd.DataFrame:
    """Prototypes ranked by activity (images on which each is active), most active first."""
    frame = pd.DataFrame(
        [
            {
                "prototype": int(p["id"]),
                "label": p.get("label") or "",
                "images": int(p.get("num_images") or 0),
                "pixel share": float(p.get("pixel_share") or 0.0),
            }
            for p in protos
        ]
    )
    if frame.empty:
        return frame
    frame = frame.sort_values(["images", "pixel share"], ascending=False).reset_index(drop=True)
    frame["rank"] = np.arange(1, len(frame) + 1)
    return frame


def long_tail_chart(frame: pd.DataFrame) -> alt.Chart:
    """The long-tail bar chart: one bar per prototype, sorted by activity."""
    return (
        alt.Chart(frame)
        .mark_bar(color="#d62728")
        .encode(
            x=alt.X("rank:O", title="prototypes ranked by activity", axis=alt.Axis(labels=len(frame) <= 64)),
            y=alt.Y("images:Q", title="images where active"),
            tooltip=["prototype:Q", "label:N", "images:Q", alt.Tooltip("pixel share:Q", format=".2%")],
        )
        .properties(height=300)
    )


def active_histogram(stats: dict) -> pd.DataFrame:
    """``active prototypes`` → ``images`` from ``Stats.active_per_image.histogram`` (entry n = images
    with n active prototypes), from the first non-empty count on."""
    pairs = list(enumerate(stats["active_per_image"]["histogram"]))
    while pairs and pairs[0][1] == 0:
        pairs.pop(0)
    return pd.DataFrame(pairs, columns=["active prototypes", "images"])


def histogram_chart(frame: pd.DataFrame) -> alt.Chart:
    """Bars: how many images have n active prototypes."""
    return (
        alt.Chart(frame)
        .mark_bar(color="#1f77b4")
        .encode(
            x=alt.X("active prototypes:O"),
            y=alt.Y("images:Q"),
            tooltip=["active prototypes", "images"],
        )
        .properties(height=300)
    )


#: Up to this many prototypes the heatmap is an interactive chart (hover for the pair); above, the
#: server's image (K² rectangles would not draw in a browser at K = 2048).
MAX_INTERACTIVE_HEATMAP = 64


def similarity_matrix(answer: dict) -> np.ndarray:
    """The K×K cosine similarity of the prototype vectors (``PrototypeSimilarity.cosine``)."""
    return np.asarray(answer["cosine"], dtype=float)


def heatmap_chart(sim: np.ndarray, labels: dict[int, str] | None = None) -> alt.Chart:
    """The similarity heatmap (prototype × prototype)."""
    k = sim.shape[0]
    ii, jj = np.meshgrid(np.arange(k), np.arange(k), indexing="ij")
    frame = pd.DataFrame({"a": ii.ravel(), "b": jj.ravel(), "cosine": sim.ravel()})
    if labels:
        frame["label a"] = [labels.get(int(a), "") for a in frame["a"]]
        frame["label b"] = [labels.get(int(b), "") for b in frame["b"]]
    tooltip = ["a:O", "b:O", alt.Tooltip("cosine:Q", format=".3f")] + (["label a:N", "label b:N"] if labels else [])
    side = min(720, max(280, 10 * k))
    return (
        alt.Chart(frame)
        .mark_rect()
        .encode(
            x=alt.X("a:O", title="prototype", axis=alt.Axis(labels=k <= 64)),
            y=alt.Y("b:O", title="prototype", axis=alt.Axis(labels=k <= 64)),
            color=alt.Color("cosine:Q", scale=alt.Scale(scheme="redblue", domain=[-1, 1], reverse=True)),
            tooltip=tooltip,
        )
        .properties(width=side, height=side)
    )


def near_duplicates(stats: dict) -> pd.DataFrame:
    """The pairs the indexer found above ``Stats.duplicate_threshold`` (the page asks for the slider's
    threshold), most similar first."""
    rows = [(d["a"], d["b"], d["cosine"]) for d in stats["near_duplicates"]]
    frame = pd.DataFrame(rows, columns=["prototype a", "prototype b", "cosine"])
    return frame.sort_values("cosine", ascending=False).reset_index(drop=True)
