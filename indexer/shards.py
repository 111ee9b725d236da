"""Per-rank shards written while indexing, and their merge into the final index.

A shard is ``raw.db`` (images, segments in production order, skipped files), ``raw.f32`` (segment
vectors, row ``raw_row``), optionally ``raw_encoder.f32`` (the segments' pooled encoder features, same
rows) and ``label_counts.npy`` (K×C pixels per prototype and class). The merge
orders all segments by (prototype, score desc, image id) and numbers them 0..N-1 in that order, so
the result does not depend on how images were split between ranks.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import faiss
import numpy as np

from indexer import schema
from indexer.segments import ImageSegmentation
from indexer.vectors import build_faiss

logger = logging.getLogger(__name__)

_SEGMENT_COLS = "image_id, prototype, score, area, feature_area, bbox_x, bbox_y, bbox_w, bbox_h, rle"
_IMAGE_COLS = "id, file_name, width, height, crop_x, crop_y, crop_w, crop_h, num_segments"


class ShardWriter:
    """Appends one rank's images and segments to ``directory`` (see the module docstring)."""

    def __init__(
        self, directory: Path, dim: int, num_prototypes: int, num_classes: int = 0, encoder_dim: int | None = None
    ) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory, self.dim, self.encoder_dim = directory, dim, encoder_dim
        self.conn = schema.create(directory / "raw.db", schema.SHARD_SCHEMA)
        self.vectors = open(directory / "raw.f32", "wb")  # noqa: SIM115 - closed in close()
        self.encoder_vectors = open(directory / ENCODER_RAW, "wb") if encoder_dim else None  # noqa: SIM115
        self.rows = 0
        self.num_images = 0
        self.label_counts = np.zeros((num_prototypes, max(num_classes, 0)), dtype=np.int64)

    def add_image(
        self,
        image_id: int,
        file_name: str,
        size: tuple[int, int],
        box: tuple[int, int, int, int],
        seg: ImageSegmentation,
    ) -> None:
        """Record one image and its segments (vectors go to ``raw.f32``)."""
        n = len(seg.prototypes)
        self.conn.execute(
            f"INSERT INTO raw_images ({_IMAGE_COLS}) VALUES (?,?,?,?,?,?,?,?,?)",
            (image_id, file_name, size[0], size[1], *box, n),
        )
        rows = [
            (
                self.rows + i,
                image_id,
                int(seg.prototypes[i]),
                float(seg.scores[i]),
                int(seg.areas[i]),
                int(seg.feature_areas[i]),
                *map(int, seg.bboxes[i]),
                seg.rles[i],
            )
            for i in range(n)
        ]
        self.conn.executemany(
            f"INSERT INTO raw_segments (raw_row, {_SEGMENT_COLS}) VALUES (?,?,?,?,?,?,?,?,?,?,?)", rows
        )
        self.vectors.write(np.ascontiguousarray(seg.vectors, dtype=np.float32).tobytes())
        if self.encoder_vectors is not None:
            enc = seg.encoder_vectors
            if enc is None or enc.shape != (n, self.encoder_dim):
                got = None if enc is None else enc.shape
                raise ValueError(f"expected ({n}, {self.encoder_dim}) encoder vectors for image {image_id}, got {got}")
            self.encoder_vectors.write(np.ascontiguousarray(enc, dtype=np.float32).tobytes())
        self.rows += n
        self.num_images += 1
        if seg.label_counts is not None and self.label_counts.shape[1]:
            np.add.at(self.label_counts, seg.prototypes, seg.label_counts)

    def add_skipped(self, file_name: str, reason: str) -> None:
        """Record an image that could not be indexed (e.g. it failed to decode)."""
        self.conn.execute("INSERT INTO skipped VALUES (?, ?)", (file_name, reason))

    def close(self) -> None:
        """Flush everything to disk."""
        self.conn.commit()
        self.conn.close()
        self.vectors.close()
        if self.encoder_vectors is not None:
            self.encoder_vectors.close()
        np.save(self.directory / "label_counts.npy", self.label_counts)


ENCODER_RAW = "raw_encoder.f32"


def _shard_vectors(shard: Path, dim: int, name: str = "raw.f32") -> np.ndarray:
    path = shard / name
    n = path.stat().st_size // (4 * dim)
    if n == 0:
        return np.zeros((0, dim), np.float32)
    return np.memmap(path, dtype=np.float32, mode="r", shape=(n, dim))


def merge_shards(
    shards: list[Path],
    out: Path,
    dim: int,
    faiss_spec: str,
    chunk: int = 65536,
    encoder: tuple[int, str] | None = None,
) -> dict[str, int]:
    """Merge shard directories into ``out/index.db`` and ``out/segments.faiss``.

    Creates the ``images``, ``segments`` and ``skipped`` tables (the caller fills ``prototypes``);
    ``encoder`` = (dimension, FAISS spec) also writes the shards' encoder vectors, in the same id order, to
    ``out/segments_encoder.faiss``. Returns counts {images, segments, skipped}.
    """
    conn = schema.create(out / schema.DB_NAME, schema.INDEX_SCHEMA)
    work_path = out / ".merge.db"
    conn.execute("ATTACH DATABASE ? AS work", (str(work_path),))  # bound: a path may hold a quote
    conn.execute(f"CREATE TABLE work.all_raw (shard INTEGER, raw_row INTEGER, {_SEGMENT_COLS})")
    for i, shard in enumerate(shards):
        conn.execute("ATTACH DATABASE ? AS s", (str(shard / "raw.db"),))
        conn.execute(f"INSERT INTO images ({_IMAGE_COLS}) SELECT {_IMAGE_COLS} FROM s.raw_images")
        conn.execute("INSERT INTO skipped SELECT * FROM s.skipped")
        conn.execute(f"INSERT INTO work.all_raw SELECT {i}, raw_row, {_SEGMENT_COLS} FROM s.raw_segments")
        conn.commit()
        conn.execute("DETACH DATABASE s")
    order = "ORDER BY prototype, score DESC, image_id"
    conn.execute(
        f"INSERT INTO segments (id, {_SEGMENT_COLS}, rank) SELECT row_number() OVER ({order}) - 1, "
        f"{_SEGMENT_COLS}, row_number() OVER (PARTITION BY prototype {order}) - 1 FROM work.all_raw"
    )
    conn.commit()
    perm = np.array(conn.execute(f"SELECT shard, raw_row FROM work.all_raw {order}").fetchall(), dtype=np.int64)
    perm = perm.reshape(-1, 2)
    conn.execute("DETACH DATABASE work")
    work_path.unlink(missing_ok=True)
    _write_faiss(out / schema.FAISS_NAME, [_shard_vectors(s, dim) for s in shards], perm, dim, faiss_spec, chunk)
    if encoder is not None:
        enc_dim, enc_spec = encoder
        enc_vectors = [_shard_vectors(s, enc_dim, ENCODER_RAW) for s in shards]
        mean = _mean_vector(enc_vectors, enc_dim, chunk)
        np.save(out / schema.ENCODER_MEAN_NAME, mean)
        _write_faiss(out / schema.ENCODER_FAISS_NAME, enc_vectors, perm, enc_dim, enc_spec, chunk, centre=mean)
    counts = {
        "images": _count(conn, "images"),
        "segments": _count(conn, "segments"),
        "skipped": _count(conn, "skipped"),
    }
    conn.close()
    return counts


def _mean_vector(vectors: list[np.ndarray], dim: int, chunk: int) -> np.ndarray:
    """(dim,) float32 mean of every row of the shards' ``vectors``, read in chunks (float64 sums)."""
    total, count = np.zeros(dim, np.float64), 0
    for vecs in vectors:
        for start in range(0, len(vecs), chunk):
            total += np.asarray(vecs[start : start + chunk], dtype=np.float64).sum(0)
        count += len(vecs)
    return (total / max(count, 1)).astype(np.float32)


def centre_vectors(vectors: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """(n, C) unit vectors → the encoder space's stored form: minus the index's ``mean``, re-normalised.

    Pooled backbone features are non-negative (after a ReLU), so their raw cosines crowd near 1; centring
    on the mean of all the index's segments spreads them (the demo: neighbours above 0.99 from 63% to 25%)."""
    centred = np.asarray(vectors, np.float32) - mean
    return (centred / np.maximum(np.linalg.norm(centred, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def _write_faiss(
    path: Path,
    vectors: list[np.ndarray],
    perm: np.ndarray,
    dim: int,
    faiss_spec: str,
    chunk: int,
    centre: np.ndarray | None = None,
) -> None:
    """Build the FAISS index of the shards' ``vectors`` taken in the merged order ``perm`` ((N, 2) [shard,
    raw row] per segment id), in chunks of ``chunk`` rows, and write it to ``path``; with ``centre``, the
    vectors are stored as :func:`centre_vectors` makes them."""

    def gather(rows: np.ndarray) -> np.ndarray:
        out_vecs = np.empty((len(rows), dim), np.float32)
        for i, vecs in enumerate(vectors):
            sel = rows[:, 0] == i
            if sel.any():
                out_vecs[sel] = vecs[rows[sel, 1]]
        return out_vecs if centre is None else centre_vectors(out_vecs, centre)

    def chunks() -> Iterator[np.ndarray]:
        for start in range(0, len(perm), chunk):
            yield gather(perm[start : start + chunk])

    def sample(n: int) -> np.ndarray:
        rng = np.random.default_rng(0)
        pick = np.sort(rng.choice(len(perm), size=min(n, len(perm)), replace=False))
        return gather(perm[pick])

    faiss.write_index(build_faiss(faiss_spec, dim, chunks, sample), str(path))


def _count(conn: sqlite3.Connection, table: str) -> int:
    return int(conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])


def merged_label_counts(shards: list[Path]) -> np.ndarray | None:
    """Sum of the shards' K×C label counts; None when the dataset had no labels."""
    total = None
    for shard in shards:
        counts = np.load(shard / "label_counts.npy")
        total = counts if total is None else total + counts
    return total if total is not None and total.shape[1] else None
