"""Slot statistics of an index (docs/method.md §7): dead prototypes, active prototypes per image, the activity
long tail, and near-duplicate prototypes; plus the per-prototype table (activity, purity).

A prototype is *active* on an image when it is the argmax at one or more feature pixels (it then
has exactly one segment there), and *dead* when it is active on no image of the indexed set.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import Any

import numpy as np

from core.recipes import NEAR_DUPLICATE_THRESHOLD
from indexer.types import Stats

STATS_KEY = "slot_stats"


def fill_prototypes(
    conn: sqlite3.Connection,
    num_prototypes: int,
    label_counts: np.ndarray | None = None,
    class_names: Sequence[str] | None = None,
    labels: dict[int, str] | None = None,
) -> None:
    """(Re)write the ``prototypes`` (and ``label_counts``) tables from ``segments``.

    ``label_counts`` (K, C): labelled pixels of each class inside each prototype's masks, giving the
    majority class and purity (its share of the prototype's labelled pixels). ``labels``: names set
    by users, carried over.
    """
    rows = {
        int(r[0]): r
        for r in conn.execute(
            "SELECT prototype, COUNT(DISTINCT image_id), COUNT(*), SUM(area), AVG(score), MIN(id) "
            "FROM segments GROUP BY prototype"
        )
    }
    total_area = sum(int(r[3]) for r in rows.values()) or 1
    conn.execute("DELETE FROM prototypes")
    conn.execute("DELETE FROM label_counts")
    labels = labels or {}
    records = []
    for k in range(num_prototypes):
        r = rows.get(k)
        n_img, n_seg, area, mean, first = (int(r[1]), int(r[2]), int(r[3]), float(r[4]), int(r[5])) if r else (
            0, 0, 0, None, None)  # fmt: skip
        majority = purity = name = None
        labelled = None
        if label_counts is not None:
            counts = label_counts[k]
            labelled = int(counts.sum())
            if labelled > 0:
                majority = int(counts.argmax())
                purity = float(counts[majority] / labelled)
                name = class_names[majority] if class_names is not None else None
        records.append(
            (
                k,
                n_img,
                n_seg,
                area,
                area / total_area,
                mean,
                int(n_img == 0),
                first,
                first,
                labels.get(k),
                majority,
                name,
                purity,
                labelled,
            )
        )
    conn.executemany("INSERT INTO prototypes VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)", records)
    if label_counts is not None:
        nz = np.argwhere(label_counts > 0)
        conn.executemany(
            "INSERT INTO label_counts VALUES (?,?,?)", [(int(k), int(c), int(label_counts[k, c])) for k, c in nz]
        )
    conn.commit()


def near_duplicates(prototypes: np.ndarray, threshold: float, limit: int = 1000) -> list[dict[str, Any]]:
    """Prototype pairs (i < j) whose cosine exceeds ``threshold``, most similar first (at most ``limit``)."""
    p = prototypes / np.maximum(np.linalg.norm(prototypes, axis=1, keepdims=True), 1e-12)
    cos = p @ p.T
    i, j = np.triu_indices(len(p), k=1)
    keep = cos[i, j] > threshold
    pairs = sorted(zip(cos[i, j][keep].tolist(), i[keep].tolist(), j[keep].tolist(), strict=True), reverse=True)
    return [{"a": a, "b": b, "cosine": round(c, 6)} for c, a, b in pairs[:limit]]


def compute_stats(
    conn: sqlite3.Connection,
    prototypes: np.ndarray,
    duplicate_threshold: float = NEAR_DUPLICATE_THRESHOLD,
    top_n: int = 10,
) -> Stats:
    """The slot statistics of an index (reads ``images``, ``prototypes``; prototypes (K, D) vectors).

    Returns :class:`indexer.types.Stats`: ``num_images``, ``num_segments``, ``num_prototypes``, ``num_dead``,
    ``dead`` (ids), ``active_per_image`` {mean, median, min, max, histogram (index = number of active
    prototypes, value = images)}, ``per_prototype`` {images, segments, pixel_share: lists of length K},
    ``long_tail`` (prototype ids by pixel share, descending, with cumulative share), ``most_active`` /
    ``least_active`` (alive prototypes by images), ``near_duplicates`` (pairs above the threshold).
    """
    k = len(prototypes)
    active = np.array([r[0] for r in conn.execute("SELECT num_segments FROM images ORDER BY id")], dtype=np.int64)
    rows = conn.execute("SELECT id, num_images, num_segments, pixel_share, dead FROM prototypes ORDER BY id")
    table = np.array([tuple(r) for r in rows], dtype=np.float64).reshape(-1, 5)
    images, segments, share, dead = table[:, 1].astype(int), table[:, 2].astype(int), table[:, 3], table[:, 4]
    dead_ids = np.flatnonzero(dead > 0).tolist()
    alive = np.flatnonzero(dead == 0)
    by_images = alive[np.lexsort((alive, -images[alive]))]
    order = np.lexsort((np.arange(k), -share))
    skipped = int(conn.execute("SELECT COUNT(*) FROM skipped").fetchone()[0])
    return Stats.from_dict(
        {
            "num_images": int(len(active)),
            "num_segments": int(segments.sum()),
            "num_prototypes": int(k),
            "num_dead": len(dead_ids),
            "num_alive": int(len(alive)),
            "dead": dead_ids,
            "skipped_images": skipped,
            "active_per_image": {
                "mean": float(active.mean()) if len(active) else 0.0,
                "median": float(np.median(active)) if len(active) else 0.0,
                "min": int(active.min()) if len(active) else 0,
                "max": int(active.max()) if len(active) else 0,
                "histogram": np.bincount(active, minlength=1).tolist(),
            },
            "per_prototype": {
                "images": images.tolist(),
                "segments": segments.tolist(),
                "pixel_share": [round(float(s), 8) for s in share],
                "image_share": [round(float(n / max(len(active), 1)), 8) for n in images],
            },
            "long_tail": {
                "order": order.tolist(),
                "cumulative_pixel_share": np.round(np.cumsum(share[order]), 8).tolist(),
            },
            "most_active": [{"id": int(i), "images": int(images[i])} for i in by_images[:top_n]],
            "least_active": [{"id": int(i), "images": int(images[i])} for i in by_images[::-1][:top_n]],
            "near_duplicates": near_duplicates(prototypes, duplicate_threshold),
            "duplicate_threshold": duplicate_threshold,
        }
    )


def store_stats(conn: sqlite3.Connection, stats: Stats) -> None:
    """Save the statistics in the ``stats`` table (key ``slot_stats``, their JSON)."""
    conn.execute("INSERT OR REPLACE INTO stats (key, value) VALUES (?, ?)", (STATS_KEY, json.dumps(stats.to_dict())))
    conn.commit()


def load_stats(conn: sqlite3.Connection) -> Stats | None:
    """The stored statistics, or None (none stored, or stored in an older shape: recompute them)."""
    row = conn.execute("SELECT value FROM stats WHERE key = ?", (STATS_KEY,)).fetchone()
    if row is None:
        return None
    try:
        return Stats.from_dict(json.loads(row[0]))
    except (KeyError, TypeError, ValueError):
        return None
