"""The FAISS index of segment vectors: build (flat exact inner product, or IVF / IVF-PQ) and search.

Vectors are added in segment-id order, so FAISS's sequential ids *are* segment ids (no ID map), and
the segments of one prototype are one id range: a search restricted to a prototype is an
``IDSelectorRange``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator

import faiss
import numpy as np

logger = logging.getLogger(__name__)

INDEX_TYPES = ("flat", "ivf", "ivfpq")
#: A PQ sub-quantizer has 2**8 centroids: FAISS refuses to train it on fewer vectors.
PQ_MIN_TRAIN = 256


def faiss_spec(index_type: str, dim: int, count: int, nlist: int | None = None, pq_m: int | None = None) -> str:
    """The ``faiss.index_factory`` string for ``index_type`` and ``count`` vectors.

    IVF needs ~39 training vectors per list; with too few vectors it falls back to ``Flat`` (exact).
    IVF-PQ also needs :data:`PQ_MIN_TRAIN` vectors for its codebooks; with fewer it falls back to IVF-Flat.
    Its spec ends in ``np``: no polysemous training, which only serves Hamming-filtered search (never used
    here) and cost a fixed ~20-70 s per build on a 2-core CPU (IVF64,PQ16 on 20k vectors: 71.5 s with it,
    2.1 s without, the same neighbours and distances).
    """
    if index_type not in INDEX_TYPES:
        raise ValueError(f"unknown FAISS index type {index_type!r}; choose one of: {', '.join(INDEX_TYPES)}")
    if index_type == "flat":
        return "Flat"
    nlist = nlist or min(4096, max(1, int(4 * math.sqrt(max(count, 1)))))
    if count < 39 * nlist:
        logger.warning("%d segments are too few for IVF%d; using an exact flat index", count, nlist)
        return "Flat"
    if index_type == "ivfpq" and count < PQ_MIN_TRAIN:
        logger.warning("%d segments are too few to train PQ codebooks; using IVF%d without PQ", count, nlist)
    if index_type == "ivf" or count < PQ_MIN_TRAIN:
        return f"IVF{nlist},Flat"
    m = pq_m or max(m for m in (1, 2, 4, 8, 16, 32, 64) if dim % m == 0 and m <= max(1, dim // 4))
    return f"IVF{nlist},PQ{m}np"


def build_faiss(
    spec: str,
    dim: int,
    chunks: Callable[[], Iterator[np.ndarray]],
    train_sample: Callable[[int], np.ndarray] | None = None,
) -> faiss.Index:
    """Build an inner-product index from ``chunks()`` (float32 (n, D) arrays in segment-id order).

    ``train_sample(n)`` returns up to n vectors for IVF training (64 per list; at least
    :data:`PQ_MIN_TRAIN` for PQ codebooks). IVF indexes get a direct map so ``reconstruct(segment_id)`` works.
    """
    index = faiss.index_factory(dim, spec, faiss.METRIC_INNER_PRODUCT)
    if not index.is_trained:
        ivf = faiss.extract_index_ivf(index)
        want = 64 * ivf.nlist
        if isinstance(faiss.downcast_index(ivf), faiss.IndexIVFPQ):
            want = max(want, PQ_MIN_TRAIN)
        sample = np.ascontiguousarray(train_sample(min(want, 200_000)), dtype=np.float32)
        index.train(sample)
    for chunk in chunks():
        if len(chunk):
            index.add(np.ascontiguousarray(chunk, dtype=np.float32))
    if spec != "Flat":
        ivf = faiss.extract_index_ivf(index)
        ivf.make_direct_map()
        ivf.nprobe = min(ivf.nlist, 16)
    return index


def search(
    index: faiss.Index, queries: np.ndarray, k: int, id_range: tuple[int, int] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` inner products of (n, D) queries, optionally within segment ids [lo, hi).

    Returns (scores (n, k), ids (n, k)); missing results have id -1.
    """
    queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
    if id_range is None:
        return index.search(queries, k)
    lo, hi = id_range
    if hi <= lo:
        return np.full((len(queries), k), -np.inf, np.float32), np.full((len(queries), k), -1, np.int64)
    if isinstance(index, faiss.IndexFlat):  # scans only the id range
        return index.search(queries, k, params=faiss.SearchParameters(sel=faiss.IDSelectorRange(lo, hi)))
    nprobe = faiss.extract_index_ivf(index).nprobe
    params = faiss.SearchParametersIVF(sel=faiss.IDSelectorRange(lo, hi), nprobe=nprobe)
    return index.search(queries, k, params=params)
