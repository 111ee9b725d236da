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
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import sqlite3
import sys
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from core.checkpoint import CheckpointError, file_sha256
from core.datasets import loader_workers
from core.infer_model import CompilePlan, inference_model_for
from core.inference import image_segments, teacher_outputs
from core.recipes import INDEX_CROP, INDEX_RESIZE
from indexer.build import _collate, _default_device, _ImageSet, _swap_into_place, describe_inference, resolve_images
from indexer.progress import COMPILE_MODES, Progress, add_compile_argument, configure_logging, exit_on_sigterm
from indexer.store import IndexMismatchError
from indexer.vectors import INDEX_TYPES, build_faiss, faiss_spec

logger = logging.getLogger(__name__)

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


# ---------------------------------------------------------------------------------------------- vectors


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


def _raw_vectors(path: Path, dim: int) -> np.ndarray:
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


# ---------------------------------------------------------------------------------------------- build


class _Writer:
    """Appends vectors to the raw float32 files and rows to SQLite, flushing every ``flush_rows`` rows."""

    def __init__(self, directory: Path, dim: int, global_vectors: bool, flush_rows: int = 4096) -> None:
        self.conn = sqlite3.connect(directory / DB_NAME)
        self.conn.executescript(_SCHEMA)
        self.vectors = open(directory / VECTORS_RAW, "wb")  # noqa: SIM115 - closed in close()
        self.globals = open(directory / GLOBAL_RAW, "wb") if global_vectors else None  # noqa: SIM115
        self.dim, self.flush_rows = dim, flush_rows
        self.num_vectors = self.num_images = self.num_skipped = 0
        self._images: list[tuple] = []
        self._rows: list[tuple] = []

    def add(self, image_id: int, file_name: str, size: tuple[int, int], v: ImageVectors) -> None:
        n = len(v.prototypes)
        global_row = None
        if self.globals is not None:
            self.globals.write(np.ascontiguousarray(v.global_vector, dtype=np.float32).tobytes())
            global_row = self.num_images
        self._images.append((image_id, file_name, int(size[0]), int(size[1]), n, global_row))
        self._rows.extend(
            (self.num_vectors + i, image_id, int(v.prototypes[i]), float(v.scores[i]), float(v.area_shares[i]),
             int(v.feature_areas[i]))
            for i in range(n)
        )  # fmt: skip
        self.vectors.write(np.ascontiguousarray(v.vectors, dtype=np.float32).tobytes())
        self.num_vectors += n
        self.num_images += 1
        if len(self._rows) + len(self._images) >= self.flush_rows:
            self.flush()

    def skip(self, file_name: str, reason: str) -> None:
        self.conn.execute("INSERT INTO skipped VALUES (?, ?)", (file_name, reason))
        self.num_skipped += 1

    def flush(self) -> None:
        self.conn.executemany("INSERT INTO images VALUES (?,?,?,?,?,?)", self._images)
        self.conn.executemany("INSERT INTO vectors VALUES (?,?,?,?,?,?)", self._rows)
        self.conn.commit()
        self._images.clear()
        self._rows.clear()

    def close(self) -> None:
        self.flush()
        self.conn.close()
        self.vectors.close()
        if self.globals is not None:
            self.globals.close()


@dataclass(frozen=True)
class ImageIndexConfig:
    """One image-index build: ``checkpoint``'s vectors of ``data_root``/``split`` written to ``out_dir``.

    ``resize``/``crop``: the model input, as the ordinary index; ``global_vectors``: also one vector per image;
    ``index_type``: ``auto`` (flat up to ``flat_max`` vectors, IVF-PQ above), ``flat``, ``ivf`` or ``ivfpq``;
    ``nlist``/``pq_m``: IVF lists and PQ sub-quantisers (default: :func:`vector_spec`'s, at most 1024 lists);
    ``flush_rows``: SQLite rows buffered before a write; ``chunk``: vectors per FAISS add; ``limit``: the first
    N images only; ``fused``/``jpeg_draft``/``compile``: as :class:`indexer.build.IndexConfig` (an ImageNet-size
    job on a CPU compiles the model after its first batch, :class:`core.infer_model.CompilePlan`).
    """

    checkpoint: str | os.PathLike
    data_root: str | os.PathLike
    out_dir: str | os.PathLike
    split: str | None = "val2017"
    resize: int = INDEX_RESIZE
    crop: int = INDEX_CROP
    batch_size: int = 32
    workers: int | None = None  # None: core.datasets.loader_workers (spare cores only)
    device: str | torch.device | None = None
    global_vectors: bool = False
    index_type: str = "auto"
    nlist: int | None = None
    pq_m: int | None = None
    flat_max: int = FLAT_MAX_VECTORS
    flush_rows: int = 4096
    chunk: int = 0  # 0: ADD_CHUNK
    limit: int | None = None
    fused: bool = True
    jpeg_draft: bool = False
    show_progress: bool = False
    progress_file: str | os.PathLike | None = None
    compile: bool | None = None


def build_image_index(config: ImageIndexConfig) -> Path:
    """Build the image index of ``config`` (see the module doc); returns its directory.

    Raises :class:`core.checkpoint.CheckpointError` (missing or unreadable checkpoint), FileNotFoundError
    (no data root or split folder) and ValueError (no image found or none decodable, bad options).
    """
    if config.crop > config.resize:
        raise ValueError(f"crop ({config.crop}) must not exceed resize ({config.resize})")
    if config.batch_size < 1:
        raise ValueError(f"batch size must be at least 1, got {config.batch_size}")
    if config.index_type not in INDEX_TYPE_CHOICES:
        raise ValueError(
            f"unknown FAISS index type {config.index_type!r}; choose one of: {', '.join(INDEX_TYPE_CHOICES)}"
        )
    started = time.time()
    out = Path(config.out_dir).expanduser().resolve()
    if not Path(config.checkpoint).is_file():
        raise CheckpointError(f"checkpoint not found: {config.checkpoint}")
    root, split, paths = resolve_images(config.data_root, config.split)
    if config.limit is not None:
        paths = paths[: config.limit]
    if not paths:
        raise ValueError(f"no images to index in {root} (split {split!r}, limit {config.limit})")
    dev = torch.device(config.device) if config.device is not None else _default_device()
    model = inference_model_for(config.checkpoint, dev, fused=config.fused)
    prototypes = model.grouping_k.slot_embed.weight.detach().float().cpu()  # (K, D)
    k, d = prototypes.shape
    tmp = out.with_name(f".{out.name}.building-{uuid.uuid4().hex[:12]}")
    tmp.mkdir(parents=True)
    try:
        writer = _Writer(tmp, d, config.global_vectors, config.flush_rows)
        loader = DataLoader(
            _ImageSet(list(enumerate(paths)), root, config.resize, config.crop, None, config.jpeg_draft),
            batch_size=config.batch_size,
            num_workers=loader_workers(config.workers, dev),
            collate_fn=_collate,
        )
        bar = Progress(len(paths), "index-images", config.progress_file, bar=config.show_progress)
        plan = CompilePlan(model, config.compile, len(paths), dev)
        done = 0
        try:
            for batch in loader:
                started = time.perf_counter()
                ok = [it for it in batch if "error" not in it]
                for it in batch:
                    if "error" in it:
                        logger.warning("skipping %s: %s", it["file_name"], it["error"])
                        writer.skip(it["file_name"], it["error"])
                if ok:
                    z, scores = teacher_outputs(model, torch.stack([it["tensor"] for it in ok]).to(dev))
                    z, scores = z.cpu(), scores.cpu()
                    for j, it in enumerate(ok):
                        writer.add(it["id"], it["file_name"], it["size"], image_vectors(z[j], scores[j], prototypes))
                done += len(batch)
                plan.after_first_batch(len(ok), time.perf_counter() - started, done)
                bar.update(len(batch))
        finally:
            writer.close()
        if writer.num_images == 0:
            raise ValueError(f"no image of {root} (split {split}) could be decoded ({writer.num_skipped} failed)")
        bar.set_stage("faiss")
        spec = vector_spec(config.index_type, d, writer.num_vectors, config.nlist, config.pq_m, config.flat_max)
        faiss.write_index(faiss_from_raw(tmp / VECTORS_RAW, d, spec, config.chunk), str(tmp / VECTORS_FAISS))
        global_spec = None
        if config.global_vectors:
            global_spec = vector_spec(
                config.index_type, d, writer.num_images, config.nlist, config.pq_m, config.flat_max
            )
            index = faiss_from_raw(tmp / GLOBAL_RAW, d, global_spec, config.chunk)
            faiss.write_index(index, str(tmp / GLOBAL_FAISS))
        conn = sqlite3.connect(tmp / DB_NAME)
        try:
            conn.executescript(_POST_SCHEMA)
            conn.commit()
        finally:
            conn.close()
        np.save(tmp / PROTOTYPES_NAME, F.normalize(prototypes, dim=1).numpy())
        manifest = ImageIndexManifest(
            kind=KIND,
            version=VERSION,
            checkpoint={"path": str(Path(config.checkpoint).resolve()), "sha256": file_sha256(config.checkpoint)},
            data={"root": str(root), "split": split},
            resize=config.resize,
            crop=config.crop,
            dim=d,
            num_prototypes=k,
            counts={
                "images": writer.num_images,
                "skipped": writer.num_skipped,
                "vectors": writer.num_vectors,
                "global_vectors": writer.num_images if config.global_vectors else 0,
            },
            faiss={"vectors": spec, "global": global_spec},
            global_vectors=config.global_vectors,
            inference=describe_inference(model),
            built_at=datetime.now(UTC).isoformat(timespec="seconds"),
            build_seconds=round(time.time() - started, 3),
            model=model.config.to_dict(),
        )
        (tmp / MANIFEST_NAME).write_text(json.dumps(manifest.to_dict(), indent=2))
        _swap_into_place(tmp, out)
        tmp = None
        bar.done = bar.total
        bar.close("done")
        logger.info("image index of %d images, %d vectors written to %s", writer.num_images, writer.num_vectors, out)
        return out
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------------------------------------- queries


def _bitmap(ids: np.ndarray, n: int) -> np.ndarray:
    """A FAISS ``IDSelectorBitmap`` bitmap of ``ids`` among n (bit i of byte i >> 3, low bit first)."""
    bits = np.zeros(n, dtype=bool)
    bits[ids] = True
    return np.packbits(bits, bitorder="little")


class ImageIndex:
    """An open image-index directory (see the module doc). Unknown ids raise ``KeyError``; thread-safe."""

    def __init__(self, index_dir: Path, manifest: ImageIndexManifest) -> None:
        self.index_dir, self.manifest = index_dir, manifest
        self._conn = sqlite3.connect(f"file:{index_dir / DB_NAME}?mode=ro", uri=True, check_same_thread=False)
        self._lock = threading.RLock()
        self._faiss = faiss.read_index(str(index_dir / VECTORS_FAISS))
        self._raw = _raw_vectors(index_dir / VECTORS_RAW, manifest.dim)
        self._global_faiss = self._global_raw = None
        if manifest.global_vectors:
            self._global_faiss = faiss.read_index(str(index_dir / GLOBAL_FAISS))
            self._global_raw = _raw_vectors(index_dir / GLOBAL_RAW, manifest.dim)
        self._prototypes = np.load(index_dir / PROTOTYPES_NAME).astype(np.float32)
        # prototype → (its sorted vector ids, their FAISS selector bitmap or None), least recently used first
        self._subsets: OrderedDict[int, tuple[np.ndarray, np.ndarray | None]] = OrderedDict()
        if self._faiss.ntotal != len(self._raw) or len(self._raw) != manifest.counts["vectors"]:
            raise ImageIndexError(
                f"{index_dir}: {self._faiss.ntotal} FAISS vectors, {len(self._raw)} raw vectors, "
                f"{manifest.counts['vectors']} in the manifest; rebuild it"
            )

    @classmethod
    def open(cls, index_dir: str | os.PathLike, expected_checkpoint_sha: str | None = None) -> ImageIndex:
        """Open an image index; with ``expected_checkpoint_sha``, refuse one built from another checkpoint
        (:class:`indexer.store.IndexMismatchError`). Raises :class:`ImageIndexError` for a directory that is not
        an image index of this version, or whose parts disagree."""
        index_dir = Path(index_dir).expanduser().resolve()
        names = (MANIFEST_NAME, DB_NAME, VECTORS_RAW, VECTORS_FAISS, PROTOTYPES_NAME)
        missing = [n for n in names if not (index_dir / n).is_file()]
        if missing:
            raise ImageIndexError(f"{index_dir} is not an image index (missing {', '.join(missing)})")
        manifest = ImageIndexManifest.from_dict(json.loads((index_dir / MANIFEST_NAME).read_text()))
        sha = manifest.checkpoint.get("sha256")
        if expected_checkpoint_sha is not None and sha != expected_checkpoint_sha:
            raise IndexMismatchError(
                f"image index {index_dir} was built from checkpoint {sha}, not the expected {expected_checkpoint_sha}"
            )
        return cls(index_dir, manifest)

    def close(self) -> None:
        """Close the database connection."""
        with self._lock:
            self._conn.close()

    def __enter__(self) -> ImageIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _query(self, sql: str, params: tuple = ()) -> list[tuple]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    # -------------------------------------------------------------------------------- records
    @property
    def num_images(self) -> int:
        """Images indexed (skipped ones excluded)."""
        return int(self.manifest.counts["images"])

    @property
    def num_vectors(self) -> int:
        """(image, prototype) vectors."""
        return int(self.manifest.counts["vectors"])

    @property
    def num_prototypes(self) -> int:
        """K."""
        return int(self.manifest.num_prototypes)

    @property
    def dim(self) -> int:
        """D."""
        return int(self.manifest.dim)

    @property
    def has_global_vectors(self) -> bool:
        """Whether image-to-image search (global vectors) is available."""
        return bool(self.manifest.global_vectors)

    def _image(self, row: tuple) -> ImageEntry:
        root = Path(self.manifest.data["root"] or ".")
        return ImageEntry(row[0], row[1], root / row[1], row[2], row[3], row[4])

    def image(self, image_id: int) -> ImageEntry:
        """The image ``image_id`` (KeyError if not indexed)."""
        rows = self._query(
            "SELECT id, file_name, width, height, num_vectors FROM images WHERE id = ?", (int(image_id),)
        )
        if not rows:
            raise KeyError(f"no image {image_id}")
        return self._image(rows[0])

    _VEC_SQL = (
        "SELECT v.id, v.image_id, v.prototype, v.score, v.area_share, v.feature_area, i.file_name "
        "FROM vectors v JOIN images i ON i.id = v.image_id"
    )

    def vector(self, vector_id: int) -> VectorRecord:
        """The (image, prototype) vector record ``vector_id`` (KeyError if unknown)."""
        rows = self._query(f"{self._VEC_SQL} WHERE v.id = ?", (int(vector_id),))
        if not rows:
            raise KeyError(f"no vector {vector_id}")
        return VectorRecord(*rows[0])

    def vectors(self, ids: Sequence[int]) -> dict[int, VectorRecord]:
        """Records of ``ids`` (unknown ones left out), by id."""
        found: dict[int, VectorRecord] = {}
        ids = [int(i) for i in ids]
        for start in range(0, len(ids), 500):
            part = ids[start : start + 500]
            marks = ",".join("?" * len(part))
            for r in self._query(f"{self._VEC_SQL} WHERE v.id IN ({marks})", tuple(part)):
                found[r[0]] = VectorRecord(*r)
        return found

    def image_vectors(self, image_id: int) -> list[VectorRecord]:
        """The vectors of image ``image_id``, by prototype (KeyError if the image is not indexed)."""
        self.image(image_id)
        return [
            VectorRecord(*r)
            for r in self._query(f"{self._VEC_SQL} WHERE v.image_id = ? ORDER BY v.prototype", (int(image_id),))
        ]

    def vector_array(self, vector_id: int) -> np.ndarray:
        """(D,) float32 the stored (unit) vector ``vector_id``."""
        if not 0 <= int(vector_id) < len(self._raw):
            raise KeyError(f"no vector {vector_id}")
        return np.array(self._raw[int(vector_id)], dtype=np.float32)

    def global_vector(self, image_id: int) -> np.ndarray:
        """(D,) float32 the global vector of image ``image_id``."""
        self._require_global()
        rows = self._query("SELECT global_row FROM images WHERE id = ?", (int(image_id),))
        if not rows:
            raise KeyError(f"no image {image_id}")
        return np.array(self._global_raw[rows[0][0]], dtype=np.float32)

    def prototype_vectors(self) -> np.ndarray:
        """(K, D) the normalised teacher prototypes."""
        return self._prototypes.copy()

    def prototype_count(self, prototype: int) -> int:
        """How many images the prototype is active in (= its vectors)."""
        self._check_prototype(prototype)
        return int(self._query("SELECT COUNT(*) FROM vectors WHERE prototype = ?", (int(prototype),))[0][0])

    def _check_prototype(self, prototype: int) -> None:
        if not 0 <= int(prototype) < self.num_prototypes:
            raise KeyError(f"no prototype {prototype} (K = {self.num_prototypes})")

    # -------------------------------------------------------------------------------- queries
    def top_k(self, prototype: int, k: int = 10, offset: int = 0) -> list[VectorRecord]:
        """The images where ``prototype`` scores highest: their (image, prototype) vectors ranked by score
        (descending, ties by image id); images where it is not active are not ranked."""
        self._check_prototype(prototype)
        rows = self._query(
            f"{self._VEC_SQL} WHERE v.prototype = ? ORDER BY v.score DESC, v.image_id LIMIT ? OFFSET ?",
            (int(prototype), int(k), int(offset)),
        )
        return [VectorRecord(*r) for r in rows]

    def neighbors(
        self, vector_id: int | None = None, image_id: int | None = None, k: int = 10, prototype: int | None = None
    ) -> list[Neighbor]:
        """Nearest neighbours by cosine, the query itself left out. Give exactly one of:

        - ``vector_id``: the (image, prototype) vectors nearest to that vector (only ``prototype``'s if given);
        - ``image_id`` with ``prototype``: the same, for the image's vector of that prototype (KeyError when the
          prototype is not active in the image);
        - ``image_id`` alone: the images nearest by their global vectors (:class:`GlobalVectorsUnavailableError`
          for an index built without them).
        """
        if (vector_id is None) == (image_id is None):
            raise ValueError("give exactly one of vector_id and image_id")
        if image_id is not None and prototype is None:
            return self.search_images(self.global_vector(image_id), k, exclude=int(image_id))
        if vector_id is None:
            self._check_prototype(prototype)
            rows = self._query(
                "SELECT id FROM vectors WHERE image_id = ? AND prototype = ?", (int(image_id), int(prototype))
            )
            if not rows:
                self.image(image_id)
                raise KeyError(f"prototype {prototype} is not active in image {image_id}")
            vector_id = rows[0][0]
        return self.search(self.vector_array(vector_id), k, prototype, exclude=int(vector_id))

    def search(
        self, vector: np.ndarray, k: int = 10, prototype: int | None = None, exclude: int | None = None
    ) -> list[Neighbor]:
        """The (image, prototype) vectors nearest to ``vector`` (D,) by cosine (it is normalised here), only
        ``prototype``'s if given, ``exclude`` left out; most similar first."""
        q = self._unit(vector)
        subset = bitmap = None
        if prototype is not None:
            self._check_prototype(prototype)
            subset, bitmap = self._subset(int(prototype))
        hits = search_vectors(self._faiss, self._raw, q, int(k), exclude, subset, bitmap=bitmap)
        records = self.vectors([i for i, _ in hits])
        images = self._images_by_id({r.image_id for r in records.values()})
        return [Neighbor(s, images[records[i].image_id], records[i]) for i, s in hits if i in records]

    def search_images(self, vector: np.ndarray, k: int = 10, exclude: int | None = None) -> list[Neighbor]:
        """The images whose global vectors are nearest to ``vector`` (D,) by cosine, image ``exclude`` left out."""
        self._require_global()
        q = self._unit(vector)
        ex_row = None
        if exclude is not None:
            rows = self._query("SELECT global_row FROM images WHERE id = ?", (int(exclude),))
            ex_row = rows[0][0] if rows else None
        hits = search_vectors(self._global_faiss, self._global_raw, q, int(k), ex_row)
        by_row = {r[5]: self._image(r) for r in self._images_where("global_row", [r for r, _ in hits])}
        return [Neighbor(s, by_row[r]) for r, s in hits if r in by_row]

    def _images_by_id(self, ids: set[int]) -> dict[int, ImageEntry]:
        return {r[0]: self._image(r) for r in self._images_where("id", sorted(ids))}

    def _images_where(self, column: str, values: Sequence[int]) -> list[tuple]:
        """Rows (id, file_name, width, height, num_vectors, global_row) of the images whose ``column`` is in
        ``values`` (queried 500 at a time)."""
        rows: list[tuple] = []
        cols = "id, file_name, width, height, num_vectors, global_row"
        for start in range(0, len(values), 500):
            part = tuple(int(v) for v in values[start : start + 500])
            rows += self._query(f"SELECT {cols} FROM images WHERE {column} IN ({','.join('?' * len(part))})", part)
        return rows

    def _unit(self, vector: np.ndarray) -> np.ndarray:
        v = np.asarray(vector, dtype=np.float32).reshape(-1)
        if v.shape[0] != self.dim:
            raise ValueError(f"vector has dimension {v.shape[0]}, the index's is {self.dim}")
        return v / max(float(np.linalg.norm(v)), 1e-12)

    def _require_global(self) -> None:
        if not self.has_global_vectors:
            raise GlobalVectorsUnavailableError(
                f"image index {self.index_dir} has no global image vectors; rebuild it with --global-vectors"
            )

    def _subset(self, prototype: int) -> tuple[np.ndarray, np.ndarray | None]:
        """(the sorted vector ids of ``prototype``, their FAISS selector bitmap, or None where the subset is small
        enough to be searched exactly), cached for the last :data:`SUBSET_CACHE_ENTRIES` prototypes asked for
        and at most :data:`SUBSET_CACHE_IDS` ids in all."""
        with self._lock:
            hit = self._subsets.get(prototype)
            if hit is None:
                rows = self._conn.execute("SELECT id FROM vectors WHERE prototype = ?", (prototype,)).fetchall()
                ids = np.sort(np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows)))
                hit = (ids, _bitmap(ids, len(self._raw)) if len(ids) > EXACT_SUBSET_MAX else None)
                self._subsets[prototype] = hit
                while len(self._subsets) > 1 and (
                    len(self._subsets) > SUBSET_CACHE_ENTRIES
                    or sum(len(v[0]) for v in self._subsets.values()) > SUBSET_CACHE_IDS
                ):
                    self._subsets.popitem(last=False)
            self._subsets.move_to_end(prototype)
            return hit


def search_vectors(
    index: faiss.Index,
    raw: np.ndarray,
    q: np.ndarray,
    k: int,
    exclude: int | None = None,
    subset: np.ndarray | None = None,
    exact_subset_max: int | None = None,
    bitmap: np.ndarray | None = None,
) -> list[tuple[int, float]]:
    """Top-``k`` (id, cosine) of the unit query ``q`` (D,) among the unit vectors ``raw`` (N, D) that ``index``
    holds (FAISS id = row), only the ids in ``subset`` (sorted) if given, ``exclude`` left out; most similar
    first, ties by id. Exact for a flat index and for subsets of at most ``exact_subset_max`` ids (default
    :data:`EXACT_SUBSET_MAX`; scored from ``raw``); for IVF, FAISS's ``RERANK_FACTOR`` × k candidates are
    re-scored exactly from ``raw``, so the similarities are exact and only the recall is approximate. ``bitmap``:
    the subset's selector bitmap when the caller has it (else it is made here)."""
    if k <= 0 or len(raw) == 0:
        return []
    want = k + (1 if exclude is not None else 0)
    exact_subset_max = EXACT_SUBSET_MAX if exact_subset_max is None else exact_subset_max
    if subset is not None and len(subset) <= exact_subset_max:
        cand = subset
    else:
        exact = isinstance(index, faiss.IndexFlat)
        fetch = min(len(raw), want if exact else max(RERANK_FACTOR * want, want + 32))
        q2 = q.reshape(1, -1)
        if subset is None:
            sims, ids = index.search(q2, fetch)
        else:
            if bitmap is None:  # callers that search one subset often pass it (ImageIndex caches them)
                bitmap = _bitmap(subset, len(raw))
            sel = faiss.IDSelectorBitmap(len(raw), faiss.swig_ptr(bitmap))
            if exact:
                params = faiss.SearchParameters(sel=sel)
            else:
                params = faiss.SearchParametersIVF(sel=sel, nprobe=faiss.extract_index_ivf(index).nprobe)
            sims, ids = index.search(q2, fetch, params=params)
        found = ids[0] >= 0
        if exact:
            return _top(ids[0][found], sims[0][found], k, exclude)
        cand = np.sort(ids[0][found])
    sims = np.asarray(raw[cand], dtype=np.float32) @ q  # exact cosines of the candidates
    return _top(cand, sims, k, exclude)


def _top(ids: np.ndarray, sims: np.ndarray, k: int, exclude: int | None) -> list[tuple[int, float]]:
    """The ``k`` best (id, similarity) pairs, ``exclude`` left out, most similar first, ties by id."""
    ids, sims = np.asarray(ids, np.int64), np.asarray(sims, np.float32)
    if exclude is not None:
        keep = ids != exclude
        ids, sims = ids[keep], sims[keep]
    if len(ids) > k:
        part = np.argpartition(-sims, k - 1)[:k]
        # every id scoring as the k-th best competes for the last places, so ties break by id
        part = np.union1d(part, np.flatnonzero(sims == sims[part].min()))
        ids, sims = ids[part], sims[part]
    order = np.lexsort((ids, -sims))[:k]
    return [(int(ids[i]), float(sims[i])) for i in order]


# ---------------------------------------------------------------------------------------------- CLI


def get_args_parser() -> argparse.ArgumentParser:
    """The parser of ``slotcon index-images``."""
    p = argparse.ArgumentParser(
        prog="slotcon index-images",
        description="build an image index: one vector per image and active prototype (no masks), streamed to "
        "disk in batches",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--checkpoint", required=True, help="checkpoint (this project's or the public release's)")
    p.add_argument("--data", required=True, help="dataset root: COCO / ImageNet layout, image folder, synthetic")
    p.add_argument("--split", default="val2017", help="split folder under the root ('' for the root itself)")
    p.add_argument("--out", required=True, help="image-index directory (replaced only when the build succeeds)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--global-vectors", action="store_true", help="also store one vector per image (all pixels)")
    p.add_argument("--resize", type=int, default=INDEX_RESIZE, help="shorter side before the centre crop")
    p.add_argument("--crop", type=int, default=INDEX_CROP, help="centre-crop size (the model's input)")
    p.add_argument("--workers", type=int, default=None, help="data-loading processes (default: spare cores only)")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument(
        "--faiss",
        default="auto",
        choices=INDEX_TYPE_CHOICES,
        help="auto = exact flat up to --flat-max vectors, IVF-PQ above",
    )
    p.add_argument("--flat-max", type=int, default=FLAT_MAX_VECTORS, help="largest vector count kept exact (auto)")
    p.add_argument("--nlist", type=int, default=None, help="IVF lists (default 4*sqrt(vectors))")
    p.add_argument("--pq-m", type=int, default=None, help="PQ sub-quantisers")
    p.add_argument("--limit", type=int, default=None, help="index only the first N images")
    p.add_argument("--jpeg-draft", action="store_true", help="decode JPEGs at reduced size where --resize allows")
    p.add_argument("--plain-inference", action="store_true", help="the full model, BN unfolded (reference path)")
    p.add_argument("--progress-file", default=None, help="JSON progress file rewritten as work goes")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_compile_argument(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``slotcon index-images``; returns the exit code (2 for bad input)."""
    args = get_args_parser().parse_args(argv)
    configure_logging()
    exit_on_sigterm()
    config = ImageIndexConfig(
        args.checkpoint, args.data, args.out, split=args.split or None, resize=args.resize, crop=args.crop,
        batch_size=args.batch_size, workers=args.workers, device=args.device, global_vectors=args.global_vectors,
        index_type=args.faiss, nlist=args.nlist, pq_m=args.pq_m, flat_max=args.flat_max, limit=args.limit,
        fused=not args.plain_inference, jpeg_draft=args.jpeg_draft, show_progress=not args.no_progress,
        progress_file=args.progress_file, compile=COMPILE_MODES[args.compile],
    )  # fmt: skip
    try:
        out = build_image_index(config)
    except (CheckpointError, FileNotFoundError, ValueError) as e:
        print(f"slotcon index-images: error: {e}", file=sys.stderr)
        return 2
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
