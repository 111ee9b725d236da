"""Build a concept index from a checkpoint and an image set (docs/method.md §7).

Per image: teacher scores and normalised projections (batched), segments at feature resolution,
pooled vectors, scores, and masks at image resolution (COCO RLE); see :mod:`indexer.segments`.
Everything streams to per-rank shards on disk (memory stays flat as the image count grows), then
rank 0 merges them into ``index.db`` + ``segments.faiss`` (:mod:`indexer.shards`).

The build happens in a temporary directory beside ``out_dir`` that is renamed over it only when
complete, so an interrupted build never leaves a half index and an existing index survives a failure.

Distributed: under ``torchrun --nproc_per_node=N slotcon index ...`` each rank takes every N-th image
and rank 0 merges; for several nodes ``out_dir`` must be on a filesystem all nodes share.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from core.checkpoint import file_sha256
from core.datasets import find_images, load_rgb, loader_workers
from core.distributed import get_rank, get_world_size, is_distributed
from core.infer_model import CompilePlan, InferOptions, inference_model_for
from core.recipes import INDEX_CROP, INDEX_RESIZE, NEAR_DUPLICATE_THRESHOLD
from indexer import schema
from indexer.decode import load_rgb_reduced
from indexer.image_items import ListedImages
from indexer.labels import LabelProtocol, LabelSizeError, detect_protocol
from indexer.progress import Progress, write_json_atomic
from indexer.segments import ModelView, crop_box, model_input, segment_batch
from indexer.shards import ShardWriter, merge_shards, merged_label_counts
from indexer.stats import compute_stats, fill_prototypes, store_stats
from indexer.types import CheckpointRef, DataRef, EncoderVectors, FaissInfo, IndexCounts, LabelInfo, Manifest
from indexer.vectors import faiss_spec

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int, str], None]


def resolve_images(data_root: str | os.PathLike, split: str | None) -> tuple[Path, str | None, list[Path]]:
    """(root, split actually used, sorted image paths). A split folder that does not exist on a plain
    image folder falls back to the whole folder. Raises FileNotFoundError / ValueError (empty, unreadable).
    """
    root = Path(data_root).expanduser().resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"data root {str(root)!r} does not exist or is not a directory")
    if split and not (root / split).is_dir():
        logger.info("no %s/ folder in %s: indexing the folder itself", split, root)
        split = None
    return root, split, find_images(root, split)


class _ImageSet(ListedImages):
    """Decodes images in their stored pixel frame (the frame of COCO's annotations and label maps: no EXIF
    orientation, as the release and PiCIE read them), prepares the model input (``indexer.segments``) and
    loads labels; failures are returned, not raised."""

    def __init__(
        self,
        items: list[tuple[int, Path]],
        root: Path,
        resize: int,
        crop: int,
        protocol: LabelProtocol | None,
        jpeg_draft: bool = False,
    ) -> None:
        super().__init__(items, root)
        self.protocol, self.resize, self.crop, self.jpeg_draft = protocol, resize, crop, jpeg_draft

    def __getitem__(self, i: int) -> dict:
        item, path = self.item_of(i)
        try:
            if self.jpeg_draft:  # reduced-size JPEG decode (indexer.decode); the view stays in file pixels
                img, size = load_rgb_reduced(path, self.resize)
            else:
                img = load_rgb(path, upright=False)
                size = img.size
            item["tensor"], view = model_input(img, self.resize, self.crop)
            if img.size != size:
                box = crop_box(*size, self.resize, self.crop) if self.crop else (0, 0, *size)
                view = ModelView(size, box, view.input_size)
            item["view"] = view
        except Exception as e:  # noqa: BLE001 - any decoding failure skips the image
            item["error"] = f"decode failed: {e}"
            return item
        item["size"] = size
        if self.protocol is not None:
            try:
                item["label"] = self.protocol.load(path, size)
            except FileNotFoundError:
                item["label_error"] = "no label"
            except (LabelSizeError, ValueError, OSError) as e:
                item["label_error"] = str(e)
        return item


def _collate(batch: list[dict]) -> list[dict]:
    return batch


def _init_distributed() -> bool:
    """Join the torchrun process group (gloo) when launched with WORLD_SIZE > 1; True if we created it."""
    if is_distributed() or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    dist.init_process_group("gloo")
    return True


def _broadcast_token() -> str:
    token = [uuid.uuid4().hex[:12] if get_rank() == 0 else None]
    if is_distributed():
        dist.broadcast_object_list(token, src=0)
    return str(token[0])


def local_processes() -> int:
    """This job's processes on this node, which share its cores: torchrun's ``LOCAL_WORLD_SIZE`` (1 without
    torchrun); for :func:`core.datasets.loader_workers`."""
    return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1))


def _default_device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
    return torch.device("cpu")


def index_shard(
    model: torch.nn.Module,
    items: list[tuple[int, Path]],
    root: Path,
    shard_dir: Path,
    config: IndexConfig,
    *,
    num_workers: int,
    device: torch.device,
    protocol: LabelProtocol | None,
    progress: Progress | None,
) -> dict[str, int]:
    """Index ``items`` ((image id, path) pairs) into one shard directory, as ``config`` says (the model input,
    batch size, JPEG drafts, encoder vectors, compilation: :class:`IndexConfig`). Returns counts."""
    encoder_vectors = config.encoder_vectors
    plan = CompilePlan(model, config.compile, len(items), device)
    k, d = model.grouping_k.slot_embed.weight.shape
    num_classes = protocol.num_classes if protocol else 0
    enc_dim = encoder_dim(model) if encoder_vectors else None
    writer = ShardWriter(shard_dir, d, k, num_classes, enc_dim)
    loader = DataLoader(
        _ImageSet(items, root, config.resize, config.crop, protocol, config.jpeg_draft),
        batch_size=config.batch_size,
        num_workers=num_workers,
        collate_fn=_collate,
    )
    counts = {"images": 0, "skipped": 0, "label_problems": 0}
    try:
        for batch in loader:
            ok = [it for it in batch if "error" not in it]
            for it in batch:
                if "error" in it:
                    logger.warning("skipping %s: %s", it["file_name"], it["error"])
                    writer.add_skipped(it["file_name"], it["error"])
                    counts["skipped"] += 1
            if ok:
                started = time.perf_counter()
                segs = segment_batch(
                    model,
                    [it["tensor"] for it in ok],
                    [it["view"] for it in ok],
                    [it.get("label") for it in ok],
                    num_classes,
                    device,
                    encoder_vectors=encoder_vectors,
                )
                for it, seg in zip(ok, segs, strict=True):
                    if "label_error" in it and it["label_error"] != "no label":
                        logger.warning("label ignored for %s: %s", it["file_name"], it["label_error"])
                        counts["label_problems"] += 1
                    writer.add_image(it["id"], it["file_name"], it["size"], it["view"].box, seg)
                    counts["images"] += 1
                plan.after_first_batch(len(ok), time.perf_counter() - started, counts["images"] + counts["skipped"])
            if progress is not None:
                progress.update(len(batch))
    finally:
        writer.close()
        write_json_atomic(shard_dir / "counts.json", counts)
    return counts


def describe_inference(model: torch.nn.Module) -> str:
    """How ``model`` runs inference, for the manifest: ``plain`` (the full model, BN unfolded) or ``fused``
    and the resolved :class:`core.infer_model.InferOptions` (``fused fold_bn channels_last early_chunk fp32``)."""
    opts = getattr(model, "options", None)
    if opts is None:
        return "plain"
    flags = [name for name in ("fold_bn", "channels_last", "early_chunk") if getattr(opts, name)]
    if getattr(model, "compiled", False):  # not when compiling failed and it fell back to eager
        flags.append("compile")
    return " ".join(["fused", *flags, opts.precision])


def encoder_dim(model: torch.nn.Module) -> int:
    """C, the channels of the teacher encoder's feature map (the pre-projector embedding's dimension)."""
    model = getattr(model, "module", model)
    return int(model.encoder_k.num_channels)


def _previous_labels(out: Path, sha: str) -> dict[int, str]:
    """User labels of an existing index at ``out`` built from the same checkpoint (kept on rebuild)."""
    try:
        built = Manifest.load(out).checkpoint.sha256
        if built != sha:
            logger.warning("replacing index %s built from checkpoint %s with one from %s", out, built, sha)
            return {}
        conn = schema.connect(out / schema.DB_NAME)
        try:
            rows = conn.execute("SELECT id, label FROM prototypes WHERE label IS NOT NULL").fetchall()
        finally:
            conn.close()
        return {int(r[0]): r[1] for r in rows}
    except Exception:  # noqa: BLE001 - no readable previous index: nothing to carry over
        return {}


def _swap_into_place(tmp: Path, out: Path) -> None:
    """Rename ``tmp`` to ``out``; an existing ``out`` is removed only after the new one is in place."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(out, old)
    try:
        os.replace(tmp, out)
    except BaseException:
        if old is not None:
            os.replace(old, out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@dataclass(frozen=True)
class IndexConfig:
    """One index build: the ``checkpoint``'s segments of ``data_root``/``split`` written to ``out_dir``.

    ``resize``/``crop``: the model input (shorter side, centre crop); ``index_type``: ``flat`` (exact),
    ``ivf`` or ``ivfpq``; ``use_labels``: store per-prototype purity when the dataset ships label maps;
    ``limit``: the first N images only; ``progress_file`` gets the JSON of :class:`indexer.progress.Progress`;
    ``fused``: the inference model (teacher only, BN folded, :mod:`core.infer_model`), False for the plain full
    model (A/B runs: same assignments); ``inference``: how the inference model runs
    (:class:`core.infer_model.InferOptions`; the command line reads them from ``SLOTCON_INFER_*``,
    :mod:`indexer.settings`); ``jpeg_draft``: decode JPEGs at reduced size where the resize target allows it
    (:mod:`indexer.decode`); ``encoder_vectors``: also store each segment's pooled encoder features
    (pre-projector, C = 512 for ResNet-18, 2048 for ResNet-50) in ``segments_encoder.faiss``, the second
    space for neighbour search (:meth:`indexer.store.ConceptIndex.neighbors` ``space="encoder"``);
    ``workers``: DataLoader processes (None: only the cores the model leaves spare,
    :func:`core.datasets.loader_workers`); ``compile``: ``torch.compile`` the inference model (None: when the
    job is long enough to pay the compilation back, :class:`core.infer_model.CompilePlan`).
    """

    checkpoint: str | os.PathLike
    data_root: str | os.PathLike
    out_dir: str | os.PathLike
    split: str | None = "val2017"
    resize: int = INDEX_RESIZE
    crop: int = INDEX_CROP
    batch_size: int = 32
    progress_file: str | os.PathLike | None = None
    show_progress: bool = False
    workers: int | None = None  # DataLoader workers; None: core.datasets.loader_workers (spare cores only)
    device: str | torch.device | None = None
    index_type: str = "flat"
    nlist: int | None = None
    pq_m: int | None = None
    duplicate_threshold: float = NEAR_DUPLICATE_THRESHOLD
    use_labels: bool = True
    limit: int | None = None
    fused: bool = True
    inference: InferOptions = field(default_factory=InferOptions)
    jpeg_draft: bool = False
    encoder_vectors: bool = True
    compile: bool | None = None


def build_index(
    checkpoint: str | os.PathLike,
    data_root: str | os.PathLike,
    out_dir: str | os.PathLike,
    split: str | None = "val2017",
    resize: int = INDEX_RESIZE,
    crop: int = INDEX_CROP,
    batch_size: int = 32,
    progress: ProgressCallback | None = None,
    **options: Any,
) -> Path:
    """:func:`build` of ``IndexConfig(checkpoint, data_root, out_dir, split, resize, crop, batch_size,
    **options)``; returns ``out_dir``."""
    return build(IndexConfig(checkpoint, data_root, out_dir, split, resize, crop, batch_size, **options), progress)


def build(config: IndexConfig, progress: ProgressCallback | None = None) -> Path:
    """Build the concept index of ``config`` under ``config.out_dir``; returns that directory.

    ``progress(done, total, stage)`` is called as images are processed. Raises
    :class:`core.checkpoint.CheckpointError` (bad checkpoint), FileNotFoundError / ValueError (bad data
    root, no decodable image). Works unchanged under torchrun (see module doc).
    """
    if config.crop > config.resize:
        raise ValueError(f"crop ({config.crop}) must not exceed resize ({config.resize})")
    started = time.time()
    created_group = _init_distributed()
    rank, world = get_rank(), get_world_size()
    out = Path(config.out_dir).expanduser().resolve()
    tmp: Path | None = None
    try:
        root, split, paths = resolve_images(config.data_root, config.split)
        if config.limit is not None:
            paths = paths[: config.limit]
        dev = torch.device(config.device) if config.device is not None else _default_device()
        model = inference_model_for(config.checkpoint, dev, fused=config.fused, options=config.inference)
        protocol = detect_protocol(root, split) if config.use_labels else None
        token = _broadcast_token()
        tmp = out.with_name(f".{out.name}.building-{token}")
        items = list(enumerate(paths))[rank::world]
        bar = Progress(
            len(paths),
            "index",
            config.progress_file if rank == 0 else None,
            bar=config.show_progress and rank == 0,
            scale=world,
            callback=progress if rank == 0 else None,
        )
        shard_dir = tmp / "shards" / f"rank{rank:05d}"
        index_shard(
            model,
            items,
            root,
            shard_dir,
            config,
            num_workers=loader_workers(config.workers, dev, local_processes()),
            device=dev,
            protocol=protocol,
            progress=bar,
        )
        if is_distributed():
            dist.barrier()
        if rank != 0:
            bar.close()
            return out
        bar.set_stage("merge")
        shards = sorted((tmp / "shards").iterdir())
        prototypes = torch.nn.functional.normalize(model.grouping_k.slot_embed.weight.detach().float().cpu(), dim=1)
        k, d = prototypes.shape
        total_segments = sum((s / "raw.f32").stat().st_size // (4 * d) for s in shards)
        index_type = config.index_type
        spec = faiss_spec(index_type, d, total_segments, config.nlist, config.pq_m)
        encoder = None
        if config.encoder_vectors:
            enc_dim = encoder_dim(model)
            encoder = EncoderVectors(
                enc_dim, FaissInfo(index_type, faiss_spec(index_type, enc_dim, total_segments, config.nlist))
            )
        counts = merge_shards(shards, tmp, d, spec, encoder=(encoder.dim, encoder.faiss.spec) if encoder else None)
        if counts["images"] == 0:
            raise ValueError(f"no image of {root} (split {split}) could be decoded ({counts['skipped']} failed)")
        label_counts = merged_label_counts(shards)
        label_problems = sum(json.loads((s / "counts.json").read_text())["label_problems"] for s in shards)
        shutil.rmtree(tmp / "shards")
        np.save(tmp / schema.PROTOTYPES_NAME, prototypes.numpy())
        sha = file_sha256(config.checkpoint)
        conn = schema.connect(tmp / schema.DB_NAME)
        try:
            fill_prototypes(
                conn, k, label_counts, protocol.class_names if protocol else None, _previous_labels(out, sha)
            )
            stats = compute_stats(conn, prototypes.numpy(), config.duplicate_threshold)
            store_stats(conn, stats)
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            conn.close()
        manifest = Manifest(
            version=schema.INDEX_VERSION,
            checkpoint=CheckpointRef(path=str(Path(config.checkpoint).resolve()), sha256=sha),
            data=DataRef(root=str(root), split=split),
            resize=config.resize,
            crop=config.crop,
            dim=d,
            num_prototypes=k,
            model=model.config.to_dict(),
            faiss=FaissInfo(type=index_type, spec=spec),
            labels=LabelInfo(protocol=protocol.name, class_names=list(protocol.class_names)) if protocol else None,
            counts=IndexCounts(**counts, dead_prototypes=stats.num_dead, label_problems=label_problems),
            world_size=world,
            built_at=datetime.now(UTC).isoformat(timespec="seconds"),
            build_seconds=round(time.time() - started, 3),
            host=socket.gethostname(),
            encoder=encoder,
            inference=describe_inference(model),
        )
        manifest.save(tmp)
        _swap_into_place(tmp, out)
        tmp = None
        bar.done = bar.total
        bar.close("done")
        logger.info("index of %d images, %d segments written to %s", counts["images"], counts["segments"], out)
        return out
    finally:
        if tmp is not None and rank == 0 and tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        if created_group:
            dist.destroy_process_group()
