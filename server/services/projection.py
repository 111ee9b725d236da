"""The prototype map: a 2-D projection of the prototype vectors, computed once per index and cached
(in memory and as JSON under ``<state_dir>/cache``, keyed by the index's checkpoint hash and build time).
"""

from __future__ import annotations

import hashlib
import json
import logging

import numpy as np

from server.runtime import LoadedIndex, Runtime
from server.schemas import MapPoint, PrototypeMap

logger = logging.getLogger(__name__)
METHOD = "pca"


def pca_2d(vectors: np.ndarray) -> np.ndarray:
    """(K, D) → (K, 2): the L2-normalised vectors projected on their two principal axes, scaled to [-1, 1].

    Signs are fixed (largest-magnitude loading positive) so the map does not flip between runs.
    """
    if vectors.shape[0] < 2:  # before the mean: an empty index must not warn "mean of empty slice"
        return np.zeros((vectors.shape[0], 2))
    x = vectors.astype(np.float64)
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    x -= x.mean(axis=0, keepdims=True)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    axes = vt[:2]
    if axes.shape[0] < 2:
        axes = np.vstack([axes, np.zeros_like(axes)])
    axes *= np.sign(axes[np.arange(2), np.abs(axes).argmax(axis=1)])[:, None]
    xy = x @ axes.T
    return xy / max(float(np.abs(xy).max()), 1e-12)


def _cache_key(loaded: LoadedIndex) -> str:
    m = loaded.index.manifest
    ident = f"{m.checkpoint.sha256}|{m.built_at}|{loaded.path}"
    return hashlib.sha256(ident.encode()).hexdigest()[:24]


def _coordinates(runtime: Runtime, loaded: LoadedIndex) -> np.ndarray:
    key = f"map:{_cache_key(loaded)}"
    if key in runtime.cache:
        return runtime.cache[key]
    path = runtime.settings.state_dir / "cache" / f"prototype-map-{_cache_key(loaded)}.json"
    xy = None
    if path.is_file():
        try:
            xy = np.asarray(json.loads(path.read_text())["xy"], dtype=np.float64)
        except (ValueError, KeyError, TypeError, OSError):  # any unusable cache is recomputed
            xy = None
    if xy is None or xy.shape != (loaded.index.num_prototypes, 2):
        xy = pca_2d(loaded.index.prototype_vectors())
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"method": METHOD, "xy": xy.round(6).tolist()}))
        except OSError as e:
            logger.warning("cannot cache the prototype map: %s", e)
    runtime.cache[key] = xy
    return xy


def prototype_similarity(runtime: Runtime, loaded: LoadedIndex) -> list[list[float]]:
    """The K×K cosines between the index's prototypes (3 decimals), computed once per index."""
    key = f"similarity:{_cache_key(loaded)}"
    if key not in runtime.cache:
        vectors = loaded.index.prototype_vectors()  # (K, D), normalised
        runtime.cache[key] = np.round(vectors @ vectors.T, 3).tolist()
    return runtime.cache[key]


def prototype_map(runtime: Runtime, loaded: LoadedIndex) -> PrototypeMap:
    """The map answer: cached coordinates plus each prototype's current dead flag and label."""
    xy = _coordinates(runtime, loaded)
    records = loaded.index.prototypes()
    points = [
        MapPoint(id=r.id, x=float(xy[r.id, 0]), y=float(xy[r.id, 1]), dead=r.dead, label=r.label) for r in records
    ]
    return PrototypeMap(method=METHOD, points=points)
