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


#: Above this many prototypes the similarity is served as an image only (K² numbers would not fit a
#: response budget of 1 MB: at K = 2048 they are 4 M cosines).
MAX_SIMILARITY_JSON = 256


def prototype_similarity(runtime: Runtime, loaded: LoadedIndex) -> np.ndarray:
    """The (K, K) float32 cosines between the index's prototypes, computed once per index."""
    key = f"similarity:{_cache_key(loaded)}"
    if key not in runtime.cache:
        vectors = loaded.index.prototype_vectors().astype(np.float32)  # (K, D), normalised
        runtime.cache[key] = np.clip(vectors @ vectors.T, -1.0, 1.0)
    return runtime.cache[key]


def _diverging_palette() -> list[int]:
    """256 colours from blue (index 0, cosine -1) through white (128, cosine 0) to red (255, cosine 1)."""
    t = np.linspace(-1.0, 1.0, 256)[:, None]
    white, red, blue = np.array([247, 247, 247.0]), np.array([178, 24, 43.0]), np.array([33, 102, 172.0])
    rgb = np.where(t >= 0, white + t * (red - white), white + (-t) * (blue - white))
    return np.round(rgb).astype(np.uint8).ravel().tolist()


def similarity_png(sim: np.ndarray, max_side: int = 512) -> bytes:
    """The (K, K) similarity as a palette PNG heatmap (one byte per pixel), row i / column j =
    prototypes i / j. Above ``max_side`` prototypes, each pixel is the *largest* cosine of its block of
    pairs (a prototype with itself left out), so a near-duplicate pair stays visible; below 256, each
    cell is a square of several pixels."""
    import io

    from PIL import Image

    k = sim.shape[0]
    values = sim
    if k > max_side:
        off = sim.copy()
        np.fill_diagonal(off, -1.0)
        step = -(-k // max_side)
        n = -(-k // step)
        padded = np.pad(off, ((0, n * step - k), (0, n * step - k)), constant_values=-1.0)
        values = padded.reshape(n, step, n, step).max(axis=(1, 3))
    index = np.round((np.clip(values, -1.0, 1.0) + 1.0) * 127.5).astype(np.uint8)
    img = Image.fromarray(index, mode="L").convert("P")
    img.putpalette(_diverging_palette())
    if k < 256:
        scale = max(1, 256 // max(k, 1))
        img = img.resize((k * scale, k * scale), Image.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def similarity_image(runtime: Runtime, loaded: LoadedIndex, max_side: int) -> bytes:
    """:func:`similarity_png` of the index, drawn once per index and size."""
    key = f"similarity-png:{max_side}:{_cache_key(loaded)}"
    if key not in runtime.cache:
        runtime.cache[key] = similarity_png(prototype_similarity(runtime, loaded), max_side)
    return runtime.cache[key]


def prototype_map(runtime: Runtime, loaded: LoadedIndex) -> PrototypeMap:
    """The map answer: cached coordinates plus each prototype's current dead flag and label."""
    xy = _coordinates(runtime, loaded)
    records = loaded.index.prototypes()
    points = [
        MapPoint(id=r.id, x=float(xy[r.id, 0]), y=float(xy[r.id, 1]), dead=r.dead, label=r.label) for r in records
    ]
    return PrototypeMap(method=METHOD, points=points)
