"""Building an image index: images stream through the teacher, vectors and rows are written as they come."""

from __future__ import annotations

import json
import logging
import os
import shutil
import sqlite3
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import faiss
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from core.checkpoint import CheckpointError, file_sha256
from core.datasets import loader_workers
from core.infer_model import CompilePlan, InferOptions, inference_model_for
from core.inference import teacher_outputs
from core.recipes import INDEX_CROP, INDEX_RESIZE
from indexer.build import (
    _collate,
    _default_device,
    _ImageSet,
    _swap_into_place,
    describe_inference,
    local_processes,
    resolve_images,
)
from indexer.image_schema import (
    _POST_SCHEMA,
    _SCHEMA,
    DB_NAME,
    FLAT_MAX_VECTORS,
    GLOBAL_FAISS,
    GLOBAL_RAW,
    INDEX_TYPE_CHOICES,
    KIND,
    MANIFEST_NAME,
    PROTOTYPES_NAME,
    VECTORS_FAISS,
    VECTORS_RAW,
    VERSION,
    ImageIndexManifest,
)
from indexer.image_vectors import ImageVectors, faiss_from_raw, image_vectors, vector_spec
from indexer.progress import Progress

logger = logging.getLogger(__name__)


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
    N images only; ``fused``/``inference``/``jpeg_draft``/``compile``: as :class:`indexer.build.IndexConfig` (an
    ImageNet-size job on a CPU compiles the model after its first batch, :class:`core.infer_model.CompilePlan`).
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
    inference: InferOptions = field(default_factory=InferOptions)
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
    model = inference_model_for(config.checkpoint, dev, fused=config.fused, options=config.inference)
    prototypes = model.grouping_k.slot_embed.weight.detach().float().cpu()  # (K, D)
    k, d = prototypes.shape
    tmp = out.with_name(f".{out.name}.building-{uuid.uuid4().hex[:12]}")
    tmp.mkdir(parents=True)
    try:
        writer = _Writer(tmp, d, config.global_vectors, config.flush_rows)
        loader = DataLoader(
            _ImageSet(list(enumerate(paths)), root, config.resize, config.crop, None, config.jpeg_draft),
            batch_size=config.batch_size,
            num_workers=loader_workers(config.workers, dev, local_processes()),
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
