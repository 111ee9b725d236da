"""Unsupervised semantic segmentation evaluation (SPEC §7, COCOSTUFF27.md).

Each image: shorter side resized to ``resolution`` (image bilinear, label nearest), centre crop
``resolution``², no CRF; teacher scores bilinearly resized to the crop, then argmax (the cluster map).
Confusion over the whole set, one-to-one Hungarian matching, pixel accuracy / per-class IoU / mIoU
(unmatched clusters count as wrong), many-to-one beside it (:mod:`indexer.unsupervised`).

Baselines on the same protocol: ``random-init`` (the checkpoint's architecture, untrained, seeded)
and ``kmeans-rgb`` (k-means on pixel colours with the same number of clusters).
"""

from __future__ import annotations

import io
import logging
import os
import time
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from core.augment import IMAGENET_MEAN, IMAGENET_STD
from core.checkpoint import file_sha256, model_from_checkpoint, read_checkpoint
from core.datasets import load_rgb
from core.inference import assign, prototype_scores
from core.model import SlotCon
from core.recipes import BASELINES, EVAL_RESOLUTION, IGNORE_LABEL
from indexer.build import resolve_images
from indexer.labels import LabelProtocol, LabelSizeError, make_protocol
from indexer.progress import Progress, write_json_atomic
from indexer.unsupervised import ConfusionAccumulator

logger = logging.getLogger(__name__)



def read_curated_list(path: str | os.PathLike) -> set[str]:
    """Image keys of a curated list (IIC's ``Coco164kFull_Stuff_Coarse_7.txt``: one id or file name a
    line); keys are file stems without leading zeros, so ``139``, ``000000000139`` and
    ``000000000139.jpg`` all match."""
    keys = set()
    for line in Path(path).read_text().splitlines():
        if line.strip():
            keys.add(_key(line.strip().split()[0]))
    if not keys:
        raise ValueError(f"curated list {path} is empty")
    return keys


def _key(name: str) -> str:
    stem = Path(name).stem
    return stem.lstrip("0") or "0" if stem.isdigit() else stem


class EvalSet(Dataset):
    """(normalised image, label crop) at the protocol resolution; failures are returned as ``error``."""

    def __init__(self, items: list[tuple[int, Path]], root: Path, protocol: LabelProtocol, resolution: int) -> None:
        self.items, self.root, self.protocol, self.res = items, root, protocol, resolution

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        image_id, path = self.items[i]
        item: dict = {"id": image_id, "file_name": path.relative_to(self.root).as_posix()}
        try:
            img = load_rgb(path, upright=False)  # the label map's frame (no EXIF orientation)
        except Exception as e:  # noqa: BLE001 - any decoding failure skips the image
            item["error"] = f"decode failed: {e}"
            return item
        try:
            label = self.protocol.load(path, img.size)
        except (FileNotFoundError, LabelSizeError, ValueError, OSError) as e:
            item["error"] = f"label: {e}"
            return item
        img = TF.center_crop(TF.resize(img, self.res, TF.InterpolationMode.BILINEAR), [self.res, self.res])
        lab = Image.fromarray(label)
        lab = TF.center_crop(TF.resize(lab, self.res, TF.InterpolationMode.NEAREST), [self.res, self.res])
        rgb = TF.to_tensor(img)
        item["rgb"] = rgb
        item["tensor"] = TF.normalize(rgb, IMAGENET_MEAN, IMAGENET_STD)
        item["label"] = np.asarray(lab, dtype=np.uint8)
        return item


def palette_png(labels: np.ndarray, num_colors: int) -> bytes:
    """PNG bytes of an (H, W) uint8 class map with a fixed palette (255 → black)."""
    rng = np.random.default_rng(12345)
    colors = rng.integers(40, 256, size=(256, 3), dtype=np.uint8)
    colors[IGNORE_LABEL] = 0
    h, w = labels.shape
    img = Image.frombytes("P", (w, h), np.ascontiguousarray(labels, dtype=np.uint8).tobytes())
    img.putpalette(colors.ravel().tolist())
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _loader(items: list[tuple[int, Path]], root: Path, protocol: LabelProtocol, resolution: int,
            batch_size: int, num_workers: int) -> DataLoader:
    return DataLoader(EvalSet(items, root, protocol, resolution), batch_size=batch_size,
                      num_workers=num_workers, collate_fn=list)


def _fit_kmeans(loader: DataLoader, k: int, seed: int, per_image: int = 2000, max_points: int = 400_000
                ) -> faiss.Kmeans:
    rng = np.random.default_rng(seed)
    samples, total = [], 0
    for batch in loader:
        for it in batch:
            if "error" in it or total >= max_points:
                continue
            pix = it["rgb"].flatten(1).t().numpy()  # (HW, 3)
            pick = rng.choice(len(pix), size=min(per_image, len(pix)), replace=False)
            samples.append(pix[pick])
            total += len(pick)
    if not samples:
        raise ValueError("no image to fit k-means on")
    x = np.ascontiguousarray(np.concatenate(samples), dtype=np.float32)
    km = faiss.Kmeans(3, k, niter=25, seed=seed, verbose=False, min_points_per_centroid=1)
    km.train(x)
    return km


def run_eval(
    checkpoint: str | os.PathLike | None,
    data_root: str | os.PathLike,
    protocol: str,
    split: str = "val2017",
    curated_list: str | os.PathLike | None = None,
    resolution: int = EVAL_RESOLUTION,
    baseline: str = "none",
    index_dir: str | os.PathLike | None = None,
    out: str | os.PathLike | None = None,
    progress_file: str | os.PathLike | None = None,
    *,
    batch_size: int = 16,
    num_workers: int = 0,
    device: str | None = None,
    num_examples: int = 6,
    clusters: int | None = None,
    seed: int = 0,
    limit: int | None = None,
    show_progress: bool = False,
) -> dict[str, Any]:
    """Evaluate a checkpoint (or a baseline) on ``protocol`` (``cocostuff27`` or ``synthetic``).

    Returns the result dict (the eval CLI's JSON): the scores of
    :func:`indexer.unsupervised.hungarian_scores` (``miou``, ``pixel_accuracy`` as fractions,
    ``per_class_iou`` and ``per_class_iou_named``, ``matching``, ``confusion``, ``many_to_one``,
    ``counts``) plus ``protocol`` (the choices made), ``baseline``, ``checkpoint``, ``seconds``, and
    ``eval_id`` when stored in ``index_dir`` (refused with IndexMismatchError if that index was built
    from another checkpoint). ``out``: also write the JSON there.
    """
    from indexer.store import ConceptIndex  # late: store imports faiss too, keeps import order simple

    if baseline not in BASELINES:
        raise ValueError(f"unknown baseline {baseline!r}; choose one of: {', '.join(BASELINES)}")
    started = time.time()
    root, split_used, paths = resolve_images(data_root, split)
    labels = make_protocol(protocol, root, split_used or split)
    items = list(enumerate(paths))  # ids as in an index of the same root and split
    if curated_list:
        curated = read_curated_list(curated_list)
        items = [(i, p) for i, p in items if _key(p.name) in curated]
        if not items:
            raise ValueError(f"no image of {root}/{split} is in the curated list {curated_list}")
    if limit is not None:
        items = items[:limit]

    ckpt_info, model, k = None, None, clusters
    if checkpoint is not None:
        ckpt = read_checkpoint(checkpoint)
        model = model_from_checkpoint(ckpt)
        ckpt_info = {"path": str(Path(checkpoint).resolve()), "sha256": file_sha256(checkpoint)}
        k = k or model.config.num_prototypes
        if baseline == "random-init":
            torch.manual_seed(seed)
            model = SlotCon(model.config)
        dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        model = model.to(dev).eval()
    elif baseline != "kmeans-rgb":
        raise ValueError("a checkpoint is required (only --baseline kmeans-rgb runs without one)")
    k = k or labels.num_classes
    expected_sha = ckpt_info["sha256"] if ckpt_info else None
    if index_dir is not None:  # refuse a foreign index before spending the compute
        ConceptIndex.open(index_dir, expected_sha).close()

    bar = Progress(len(items), "eval", progress_file, bar=show_progress)
    kmeans = None
    if baseline == "kmeans-rgb":
        bar.set_stage("kmeans-fit")
        kmeans = _fit_kmeans(_loader(items, root, labels, resolution, batch_size, num_workers), k, seed)
        bar.set_stage("eval")
    acc = ConfusionAccumulator(labels.num_classes, num_clusters=k)
    skipped: list[tuple[str, str]] = []
    examples: list[tuple[int, str, np.ndarray, np.ndarray]] = []
    for batch in _loader(items, root, labels, resolution, batch_size, num_workers):
        ok = [it for it in batch if "error" not in it]
        skipped += [(it["file_name"], it["error"]) for it in batch if "error" in it]
        if ok:
            if kmeans is not None:
                preds = []
                for it in ok:
                    pix = np.ascontiguousarray(it["rgb"].flatten(1).t().numpy(), dtype=np.float32)
                    preds.append(kmeans.index.search(pix, 1)[1].reshape(resolution, resolution))
                pred = np.stack(preds)
            else:
                x = torch.stack([it["tensor"] for it in ok]).to(next(model.parameters()).device)
                pred = assign(prototype_scores(model, x), (resolution, resolution)).cpu().numpy()
            for p, it in zip(pred, ok, strict=True):
                acc.update(p, it["label"])
                if len(examples) < num_examples:
                    examples.append((it["id"], it["file_name"], p.astype(np.int64), it["label"]))
        bar.update(len(batch))
    for name, why in skipped:
        logger.warning("skipped %s: %s", name, why)
    if acc.num_images == 0:
        raise ValueError(f"no image of {root} could be evaluated ({len(skipped)} skipped)")

    result = acc.scores(class_names=labels.class_names)
    result["per_class_iou_named"] = dict(zip(labels.class_names, result["per_class_iou"], strict=True))
    result["counts"].update(skipped_images=len(skipped), evaluated_images=acc.num_images)
    result["skipped"] = [{"file_name": n, "reason": r} for n, r in skipped[:100]]
    result["protocol"] = {
        "name": protocol, "split": split_used, "resolution": resolution,
        "preprocessing": "shorter side resized (image bilinear, label nearest), centre crop, no CRF",
        "prediction": "teacher scores bilinearly resized, then argmax" if kmeans is None
        else "nearest k-means centroid of each pixel's RGB",
        "curated_list": str(curated_list) if curated_list else None,
        "subset": "curated list" if curated_list else f"all {split_used or 'folder'} images (no curated list)",
        "num_clusters": k, "num_classes": labels.num_classes,
        "unmatched_clusters": "counted wrong",
    }  # fmt: skip
    result.update(baseline=baseline, checkpoint=ckpt_info, data_root=str(root),
                  seconds=round(time.time() - started, 3))
    if index_dir is not None:
        mapping = np.array([m if m is not None else IGNORE_LABEL for m in result["matching"]], dtype=np.uint8)
        pngs = [(i, n, palette_png(mapping[p], labels.num_classes), palette_png(g, labels.num_classes))
                for i, n, p, g in examples]
        with ConceptIndex.open(index_dir, expected_sha) as index:
            result["eval_id"] = index.store_eval(result, pngs)
    if out is not None:
        write_json_atomic(out, result)
    bar.close("done")
    return result
