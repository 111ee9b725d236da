"""Image index: each image as a handful of vectors, with memory flat in the image count (the paper's Fig. 12).

The paper's ImageNet retrieval treats "each image as a single segment". This index mode stores, for every
image and every prototype active in it (the argmax of the teacher's scores at feature resolution, docs/method.md §7),
ONE vector: the L2-normalised mean of the image's normalised teacher projections over that prototype's
pixels, exactly the vector of the ordinary index's segment (:func:`core.inference.image_segments`), with
its score (the release's ŝ_k · mean(ẑ)) and area share; optionally also one global vector per image (the
normalised mean over all of its pixels). No masks, RLE, crops or per-pixel data are kept.

Build (:func:`build_image_index`): images stream through the inference model in batches (DataLoader,
:func:`indexer.segments.model_input`, :func:`core.infer_model.inference_model_for`); vectors are appended
to float32 files and metadata is written to SQLite in bounded batches, so nothing grows in memory with the
image count but the list of image paths. The FAISS indexes are then built from the float32 files read in
chunks (:func:`indexer.vectors.build_faiss`): an exact flat inner-product index up to ``flat_max`` vectors,
IVF-PQ above (at most :data:`MAX_AUTO_NLIST` lists by default, trained on a bounded random sample of 64
vectors per list, then filled chunk by chunk). What still grows with the count is the IVF-PQ index itself
(m bytes of PQ code + an 8-byte id per vector) and the list of image paths. The build happens in a
temporary directory renamed over ``out`` only when complete.

Layout of an image-index directory::

    manifest.json   kind "image-index", version, checkpoint path + sha256, data root/split, resize/crop,
                    dim, num_prototypes, counts, FAISS specs, inference, built_at
    images.db       SQLite: images(id, file_name, width, height, num_vectors, global_row),
                    vectors(id, image_id, prototype, score, area_share, feature_area), skipped
    vectors.f32     (N, D) float32, row = vector id (the exact vectors: re-ranking, brute force)
    vectors.faiss   FAISS inner-product index of vectors.f32, FAISS id = vector id
    global.f32      (M, D) float32 global vectors, row = images.global_row (only with global vectors)
    global.faiss    FAISS index of global.f32 (only with global vectors)
    prototypes.npy  (K, D) L2-normalised teacher prototypes

Queries (:class:`ImageIndex`): :meth:`ImageIndex.top_k` (the images where a prototype scores highest,
from SQLite) and :meth:`ImageIndex.neighbors` (cosine search in FAISS; IVF-PQ candidates are re-ranked
with the exact vectors). CLI: ``slotcon index-images``.

Modules: this one (the format: files, SQLite schema, records, manifest), :mod:`indexer.image_vectors`
(vectors, FAISS), :mod:`indexer.image_build` (the build), :mod:`indexer.image_store` (queries),
:mod:`indexer.images_cli` (the CLI).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from indexer.vectors import INDEX_TYPES

KIND = "image-index"
#: Format of an image-index directory; :meth:`ImageIndex.open` refuses any other.
VERSION = 1
MANIFEST_NAME, DB_NAME, PROTOTYPES_NAME = "manifest.json", "images.db", "prototypes.npy"
VECTORS_RAW, VECTORS_FAISS = "vectors.f32", "vectors.faiss"
GLOBAL_RAW, GLOBAL_FAISS = "global.f32", "global.faiss"
#: ``index_type="auto"``: an exact flat index up to this many vectors (4·D bytes each in memory), IVF-PQ above.
FLAT_MAX_VECTORS = 200_000
#: A prototype-restricted search over at most this many vectors is exact (scored from ``vectors.f32``, ~0.5 µs a
#: vector); larger ones go through FAISS with a bitmap of the prototype's ids.
EXACT_SUBSET_MAX = 8192
#: Prototype subsets (ids, bitmaps) kept by an open :class:`ImageIndex`: at most this many, and this many ids.
SUBSET_CACHE_ENTRIES, SUBSET_CACHE_IDS = 64, 4_000_000
#: IVF-PQ searches fetch this many candidates per wanted result, re-ranked with the exact vectors.
RERANK_FACTOR = 10
#: Most IVF lists chosen by default: the build trains on 64 vectors per list, so its training memory is at most
#: 64 · 1024 · D floats (and k-means' temporaries) whatever the count; ``--nlist`` overrides it.
MAX_AUTO_NLIST = 1024
#: Vectors read and added to FAISS at a time (with FAISS's temporaries, ~3 × 4·D bytes each at the peak).
ADD_CHUNK = 16384
INDEX_TYPE_CHOICES = ("auto", *INDEX_TYPES)

_SCHEMA = """
CREATE TABLE images (
    id INTEGER PRIMARY KEY, file_name TEXT NOT NULL, width INTEGER NOT NULL, height INTEGER NOT NULL,
    num_vectors INTEGER NOT NULL, global_row INTEGER
);
CREATE TABLE vectors (
    id INTEGER PRIMARY KEY, image_id INTEGER NOT NULL, prototype INTEGER NOT NULL, score REAL NOT NULL,
    area_share REAL NOT NULL, feature_area INTEGER NOT NULL
);
CREATE TABLE skipped (file_name TEXT NOT NULL, reason TEXT NOT NULL);
"""
# Created after the bulk insert (cheaper than maintaining them row by row).
_POST_SCHEMA = """
CREATE INDEX vectors_by_prototype ON vectors(prototype, score DESC, image_id);
CREATE INDEX vectors_by_image ON vectors(image_id, prototype);
CREATE INDEX images_by_global_row ON images(global_row);
"""


class ImageIndexError(ValueError):
    """A directory that is not an image index of this version (the message says what is wrong)."""


class GlobalVectorsUnavailableError(ValueError):
    """An image-to-image search in an index built without global vectors (``--global-vectors``)."""


# ---------------------------------------------------------------------------------------------- records


@dataclass(frozen=True)
class ImageEntry:
    """An indexed image: ``file_name`` relative to the data root, ``path`` resolved under it, its size in
    pixels and how many (image, prototype) vectors it has."""

    id: int
    file_name: str
    path: Path
    width: int
    height: int
    num_vectors: int


@dataclass(frozen=True)
class VectorRecord:
    """One (image, prototype) vector: ``score`` is the release's concept score ŝ_k · mean(ẑ) (as a segment's),
    ``area_share`` the fraction of the image's feature pixels assigned to the prototype, ``feature_area`` their
    count."""

    id: int
    image_id: int
    prototype: int
    score: float
    area_share: float
    feature_area: int
    file_name: str


@dataclass(frozen=True)
class Neighbor:
    """A search result: the cosine ``similarity`` to the query, the ``image`` and, for (image, prototype)
    searches, the ``vector`` found (None for searches of global image vectors)."""

    similarity: float
    image: ImageEntry
    vector: VectorRecord | None = None


@dataclass(frozen=True)
class ImageIndexManifest:
    """``manifest.json`` of an image index (see the module doc)."""

    kind: str
    version: int
    checkpoint: dict[str, str]  # {"path", "sha256"}
    data: dict[str, str | None]  # {"root", "split"}
    resize: int
    crop: int
    dim: int
    num_prototypes: int
    counts: dict[str, int]  # images, skipped, vectors, global_vectors
    faiss: dict[str, str | None]  # {"vectors": spec, "global": spec | None}
    global_vectors: bool
    inference: str
    built_at: str
    build_seconds: float
    model: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object."""
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ImageIndexManifest:
        """From the JSON object; raises :class:`ImageIndexError` for another kind, version or shape."""
        if raw.get("kind") != KIND:
            raise ImageIndexError(f"not an image index (manifest kind {raw.get('kind')!r}, expected {KIND!r})")
        if raw.get("version") != VERSION:
            raise ImageIndexError(
                f"image index version {raw.get('version')!r} is not the version this code reads ({VERSION}); "
                "rebuild it with slotcon index-images"
            )
        names = {f.name for f in cls.__dataclass_fields__.values()}
        try:
            return cls(**{k: v for k, v in raw.items() if k in names})
        except TypeError as e:
            raise ImageIndexError(f"malformed image-index manifest: {e}") from e
