"""The image index's vectors: one per image and active prototype, in float32 files indexed by FAISS in chunks."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
import torch
import torch.nn.functional as F

from core.inference import image_segments
from indexer.image_schema import ADD_CHUNK, FLAT_MAX_VECTORS, INDEX_TYPE_CHOICES, MAX_AUTO_NLIST
from indexer.vectors import build_faiss, faiss_spec

logger = logging.getLogger(__name__)


@dataclass
class ImageVectors:
    """The vectors of one image: ``prototypes`` (S,) int64 ascending (the prototypes active in it),
    ``vectors`` (S, D) float32 L2-normalised mean projections, ``scores`` (S,), ``feature_areas`` (S,) and
    ``area_shares`` (S,), ``global_vector`` (D,) the L2-normalised mean over all pixels."""

    prototypes: np.ndarray
    vectors: np.ndarray
    scores: np.ndarray
    feature_areas: np.ndarray
    area_shares: np.ndarray
    global_vector: np.ndarray


def image_vectors(z_norm: torch.Tensor, scores: torch.Tensor, prototypes: torch.Tensor) -> ImageVectors:
    """One image's vectors from its teacher outputs: z_norm (D, h, w) normalised projections, scores
    (K, h, w), prototypes (K, D). The assignment, vectors and scores are those of
    :func:`indexer.segments.segment_outputs` (argmax at feature resolution, :func:`core.inference.image_segments`)."""
    seg = image_segments(z_norm, scores.argmax(0), prototypes)
    areas = seg.areas.numpy().astype(np.int64)
    pixels = int(z_norm.shape[1] * z_norm.shape[2])
    global_vector = F.normalize(z_norm.flatten(1).mean(1), dim=0)
    return ImageVectors(
        prototypes=seg.prototypes.numpy().astype(np.int64),
        vectors=seg.vectors.numpy().astype(np.float32),
        scores=seg.scores.numpy().astype(np.float32),
        feature_areas=areas,
        area_shares=(areas / pixels).astype(np.float64),
        global_vector=global_vector.numpy().astype(np.float32),
    )


def raw_vectors(path: Path, dim: int) -> np.ndarray:
    """(n, dim) float32 memory map of a raw vector file (an empty array for an empty file)."""
    n = path.stat().st_size // (4 * dim)
    if n == 0:
        return np.zeros((0, dim), np.float32)
    return np.memmap(path, dtype=np.float32, mode="r", shape=(n, dim))


def vector_spec(
    index_type: str,
    dim: int,
    count: int,
    nlist: int | None = None,
    pq_m: int | None = None,
    flat_max: int = FLAT_MAX_VECTORS,
) -> str:
    """The FAISS factory string for ``count`` vectors: ``auto`` is ``flat`` up to ``flat_max`` vectors and
    ``ivfpq`` above; the rest (and the fallbacks for too few vectors) as :func:`indexer.vectors.faiss_spec`, PQ
    without polysemous training (``PQ8np``). The default IVF list count is ``4·sqrt(count)`` as there, but at
    most :data:`MAX_AUTO_NLIST`, so the training sample (64 vectors per list) stays bounded whatever the count."""
    if index_type not in INDEX_TYPE_CHOICES:
        raise ValueError(f"unknown FAISS index type {index_type!r}; choose one of: {', '.join(INDEX_TYPE_CHOICES)}")
    if index_type == "auto":
        index_type = "flat" if count <= flat_max else "ivfpq"
    if nlist is None:
        nlist = min(MAX_AUTO_NLIST, max(1, int(4 * math.sqrt(max(count, 1)))))
    return faiss_spec(index_type, dim, count, nlist, pq_m)  # PQ specs end in "np": no polysemous training


def _chunks_of(raw: Path, dim: int, chunk: int) -> Iterator[tuple[int, np.ndarray]]:
    """(first row, (n, dim) float32 rows) of the raw vector file, ``chunk`` rows at a time, read with plain
    reads (not a memory map, whose touched pages would count in the process's resident memory)."""
    n = raw.stat().st_size // (4 * dim)
    for start in range(0, n, chunk):
        count = min(chunk, n - start) * dim
        yield start, np.fromfile(raw, dtype=np.float32, count=count, offset=4 * dim * start).reshape(-1, dim)


def faiss_from_raw(raw: Path, dim: int, spec: str, chunk: int | None = None, seed: int = 0) -> faiss.Index:
    """The FAISS inner-product index of the raw vector file ``raw`` (FAISS id = row), built from chunks of
    ``chunk`` rows; IVF is trained on a bounded random sample of rows (:func:`indexer.vectors.build_faiss`),
    gathered in one pass over the file. Only one chunk (:data:`ADD_CHUNK` rows by default), the sample and the
    index itself are ever in memory."""
    chunk = chunk or ADD_CHUNK
    total = raw.stat().st_size // (4 * dim)

    def chunks() -> Iterator[np.ndarray]:
        for _, rows in _chunks_of(raw, dim, chunk):
            yield rows

    def sample(n: int) -> np.ndarray:
        pick = np.sort(np.random.default_rng(seed).choice(total, size=min(n, total), replace=False))
        parts = []
        for start, rows in _chunks_of(raw, dim, chunk):
            lo, hi = np.searchsorted(pick, [start, start + len(rows)])
            parts.append(rows[pick[lo:hi] - start])
        return np.concatenate(parts) if parts else np.zeros((0, dim), np.float32)

    index = build_faiss(spec, dim, chunks, sample)
    if spec != "Flat":  # build_faiss maps ids for reconstruct(); the exact vectors are in ``raw``: 8 bytes saved
        faiss.extract_index_ivf(index).set_direct_map_type(faiss.DirectMap.NoMap)
    return index
