"""The index database: SQLite schema (final index and per-rank shards) and connection helpers."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

#: Format of an index directory. 2: segment scores are the release's ŝ_k · mean(ẑ) (version 1 stored the
#: cosine of the re-normalised mean, which ranks a prototype's segments differently); images and label maps
#: in their stored pixel frame. :meth:`indexer.store.ConceptIndex.open` refuses any other version.
INDEX_VERSION = 2
#: What changed in each version, for the message that asks to rebuild an older index.
VERSION_CHANGES = {
    2: "segments are scored and ranked as the release's viz_slots.py ranks them (the mean of the pixels' "
    "cosines to the prototype, ŝ_k · mean(ẑ)) and images are read in their stored pixel frame",
}
DB_NAME, FAISS_NAME, PROTOTYPES_NAME, MANIFEST_NAME = "index.db", "segments.faiss", "prototypes.npy", "manifest.json"
#: Optional: the segments' pooled encoder (pre-projector) features, same ids as ``segments.faiss``.
ENCODER_FAISS_NAME = "segments_encoder.faiss"
#: The mean those vectors were centred on before being re-normalised (``indexer.shards.centre_vectors``).
ENCODER_MEAN_NAME = "segments_encoder_mean.npy"

# Segment ids are laid out by prototype: prototype k owns ids first_segment .. first_segment+num_segments-1,
# ranked by score (the release's concept score, docs/method.md §7) descending, so top-k of a prototype is one id range.
INDEX_SCHEMA = """
CREATE TABLE images (
    id INTEGER PRIMARY KEY, file_name TEXT NOT NULL, width INTEGER NOT NULL, height INTEGER NOT NULL,
    crop_x INTEGER, crop_y INTEGER, crop_w INTEGER, crop_h INTEGER, num_segments INTEGER NOT NULL
);
CREATE TABLE segments (
    id INTEGER PRIMARY KEY, image_id INTEGER NOT NULL, prototype INTEGER NOT NULL, score REAL NOT NULL,
    area INTEGER NOT NULL, feature_area INTEGER NOT NULL, bbox_x INTEGER, bbox_y INTEGER, bbox_w INTEGER,
    bbox_h INTEGER, rle TEXT NOT NULL, rank INTEGER NOT NULL
);
CREATE INDEX segments_by_image ON segments(image_id);
CREATE TABLE prototypes (
    id INTEGER PRIMARY KEY, num_images INTEGER NOT NULL, num_segments INTEGER NOT NULL,
    pixel_area INTEGER NOT NULL, pixel_share REAL NOT NULL, mean_score REAL, dead INTEGER NOT NULL,
    first_segment INTEGER, best_segment_id INTEGER, label TEXT, majority_class INTEGER,
    majority_class_name TEXT, purity REAL, labelled_pixels INTEGER
);
CREATE TABLE label_counts (
    prototype INTEGER NOT NULL, class INTEGER NOT NULL, pixels INTEGER NOT NULL,
    PRIMARY KEY (prototype, class)
);
CREATE TABLE skipped (file_name TEXT NOT NULL, reason TEXT NOT NULL);
CREATE TABLE stats (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE evaluations (
    id INTEGER PRIMARY KEY AUTOINCREMENT, created_at TEXT NOT NULL, protocol TEXT, baseline TEXT,
    checkpoint_sha256 TEXT, miou REAL, pixel_accuracy REAL, result TEXT NOT NULL
);
CREATE TABLE eval_examples (
    eval_id INTEGER NOT NULL, image_id INTEGER NOT NULL, file_name TEXT, pred_png BLOB NOT NULL,
    gt_png BLOB NOT NULL, PRIMARY KEY (eval_id, image_id)
);
"""

# One per rank while building: rows in the order produced, vectors in raw.f32 at row ``raw_row``.
SHARD_SCHEMA = """
CREATE TABLE raw_images (
    id INTEGER PRIMARY KEY, file_name TEXT NOT NULL, width INTEGER NOT NULL, height INTEGER NOT NULL,
    crop_x INTEGER, crop_y INTEGER, crop_w INTEGER, crop_h INTEGER, num_segments INTEGER NOT NULL
);
CREATE TABLE raw_segments (
    raw_row INTEGER PRIMARY KEY, image_id INTEGER NOT NULL, prototype INTEGER NOT NULL, score REAL NOT NULL,
    area INTEGER NOT NULL, feature_area INTEGER NOT NULL, bbox_x INTEGER, bbox_y INTEGER, bbox_w INTEGER,
    bbox_h INTEGER, rle TEXT NOT NULL
);
CREATE TABLE skipped (file_name TEXT NOT NULL, reason TEXT NOT NULL);
"""


def connect(path: str | os.PathLike, readonly: bool = False) -> sqlite3.Connection:
    """A connection in WAL mode (readers never block the writer); ``readonly`` opens with ``mode=ro``."""
    path = Path(path)
    if readonly:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
    else:
        conn = sqlite3.connect(path, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
    conn.row_factory = sqlite3.Row
    return conn


def create(path: str | os.PathLike, schema: str) -> sqlite3.Connection:
    """A new database at ``path`` with ``schema``; returns the open connection."""
    conn = connect(path)
    conn.executescript(schema)
    conn.commit()
    return conn
