"""Unsupervised semantic segmentation evaluation (SPEC §7, COCOSTUFF27.md).

Each image: shorter side resized to ``resolution`` (image bilinear, label nearest), centre crop
``resolution``², no CRF; teacher scores bilinearly resized to the crop, then argmax (the cluster map).
Confusion over the whole set, one-to-one Hungarian matching, pixel accuracy / per-class IoU / mIoU
(unmatched clusters count as wrong), many-to-one beside it (:mod:`indexer.unsupervised`).

Baselines on the same protocol: ``random-init`` (the checkpoint's architecture, untrained, seeded)
and ``kmeans-rgb`` (k-means on pixel colours with the same number of clusters).
"""

from __future__ import annotations

import dataclasses
import io
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from core.augment import IMAGENET_MEAN, IMAGENET_STD
from core.checkpoint import file_sha256
from core.datasets import load_rgb, loader_workers
from core.infer_model import CompilePlan, inference_model_for, inference_model_of
from core.inference import assign, prototype_scores
from core.model import SlotCon
from core.recipes import BASELINES, EVAL_RESOLUTION, IGNORE_LABEL
from indexer.build import resolve_images
from indexer.labels import LabelProtocol, LabelSizeError, make_protocol
from indexer.progress import Progress
from indexer.segments import palette
from indexer.types import CheckpointRef, EvalResult
from indexer.unsupervised import ConfusionAccumulator, class_table, matched_confusion

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


def palette_png(labels: np.ndarray) -> bytes:
    """PNG bytes of an (H, W) uint8 class map in the project's palette (255, unlabelled → black)."""
    colors = palette(256).copy()
    colors[IGNORE_LABEL] = 0
    h, w = labels.shape
    img = Image.frombytes("P", (w, h), np.ascontiguousarray(labels, dtype=np.uint8).tobytes())
    img.putpalette(colors.ravel().tolist())
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _loader(
    items: list[tuple[int, Path]],
    root: Path,
    protocol: LabelProtocol,
    resolution: int,
    batch_size: int,
    num_workers: int,
) -> DataLoader:
    return DataLoader(
        EvalSet(items, root, protocol, resolution), batch_size=batch_size, num_workers=num_workers, collate_fn=list
    )


def _fit_kmeans(
    loader: DataLoader, k: int, seed: int, per_image: int = 2000, max_points: int = 400_000
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


@dataclass(frozen=True)
class EvalConfig:
    """One evaluation: a checkpoint (None only for ``kmeans-rgb``) or a baseline on ``protocol``
    (``cocostuff27`` or ``synthetic``) of ``data_root``/``split``, optionally a curated image list.

    ``index_dir``: also store the result (and ``num_examples`` prediction/ground-truth pairs) in that
    index, which must be built from the same checkpoint; ``out``: also write the JSON there; ``fused``: the
    inference model (:mod:`core.infer_model`), False for the plain full model (A/B runs)."""

    checkpoint: str | os.PathLike | None
    data_root: str | os.PathLike
    protocol: str
    split: str = "val2017"
    curated_list: str | os.PathLike | None = None
    resolution: int = EVAL_RESOLUTION
    baseline: str = "none"
    index_dir: str | os.PathLike | None = None
    out: str | os.PathLike | None = None
    progress_file: str | os.PathLike | None = None
    batch_size: int = 16
    workers: int | None = None  # DataLoader workers; None: core.datasets.loader_workers (spare cores only)
    device: str | None = None
    num_examples: int = 6
    clusters: int | None = None
    seed: int = 0
    limit: int | None = None
    show_progress: bool = False
    fused: bool = True
    compile: bool | None = None  # torch.compile the model; None: when the job pays it back (CompilePlan)


@dataclass
class EvalInputs:
    """What :func:`load` resolved: the images, their label protocol, the model (None for k-means), K."""

    root: Path
    split: str | None
    items: list[tuple[int, Path]]
    labels: LabelProtocol
    model: torch.nn.Module | None  # core.infer_model.InferenceModel, or the full SlotCon when not fused
    num_clusters: int
    checkpoint: CheckpointRef | None


@dataclass
class Predictions:
    """What :func:`predict` produced: the streamed confusion, example maps and skipped images."""

    confusion: ConfusionAccumulator
    examples: list[tuple[int, str, np.ndarray, np.ndarray]]
    skipped: list[tuple[str, str]]
    kmeans: bool


def load(config: EvalConfig) -> EvalInputs:
    """Resolves the images (curated list, limit), the label protocol, the model or baseline and K; refuses
    a foreign ``index_dir`` before any compute (IndexMismatchError)."""
    from indexer.store import ConceptIndex  # late: store imports faiss too, keeps import order simple

    if config.baseline not in BASELINES:
        raise ValueError(f"unknown baseline {config.baseline!r}; choose one of: {', '.join(BASELINES)}")
    root, split_used, paths = resolve_images(config.data_root, config.split)
    labels = make_protocol(config.protocol, root, split_used or config.split)
    items = list(enumerate(paths))  # ids as in an index of the same root and split
    if config.curated_list:
        curated = read_curated_list(config.curated_list)
        items = [(i, p) for i, p in items if _key(p.name) in curated]
        if not items:
            raise ValueError(f"no image of {root}/{config.split} is in the curated list {config.curated_list}")
    if config.limit is not None:
        items = items[: config.limit]
    ref, model, k = None, None, config.clusters
    if config.checkpoint is not None:
        dev = torch.device(config.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        model = inference_model_for(config.checkpoint, dev, fused=config.fused)
        ref = CheckpointRef(path=str(Path(config.checkpoint).resolve()), sha256=file_sha256(config.checkpoint))
        k = k or model.config.num_prototypes
        if config.baseline == "random-init":
            torch.manual_seed(config.seed)
            untrained = SlotCon(model.config)
            model = inference_model_of(untrained).prepare(dev) if config.fused else untrained.to(dev).eval()
    elif config.baseline != "kmeans-rgb":
        raise ValueError("a checkpoint is required (only --baseline kmeans-rgb runs without one)")
    if model is not None and config.baseline == "kmeans-rgb":
        model = None  # k-means on colours: the checkpoint only gives K
    if config.index_dir is not None:
        ConceptIndex.open(config.index_dir, ref.sha256 if ref else None).close()
    return EvalInputs(root, split_used, items, labels, model, k or labels.num_classes, ref)


def predict(config: EvalConfig, inputs: EvalInputs, bar: Progress) -> Predictions:
    """Streams the images through the model (or the k-means baseline), accumulating the K×C confusion."""
    res = config.resolution
    # the model's device; the k-means baseline runs on the CPU (FAISS)
    device = next(inputs.model.parameters()).device if inputs.model is not None else torch.device("cpu")
    workers = loader_workers(config.workers, device)

    def loader() -> DataLoader:
        return _loader(inputs.items, inputs.root, inputs.labels, res, config.batch_size, workers)

    kmeans = None
    if config.baseline == "kmeans-rgb":
        bar.set_stage("kmeans-fit")
        kmeans = _fit_kmeans(loader(), inputs.num_clusters, config.seed)
        bar.set_stage("eval")
    acc = ConfusionAccumulator(inputs.labels.num_classes, num_clusters=inputs.num_clusters)
    skipped: list[tuple[str, str]] = []
    examples: list[tuple[int, str, np.ndarray, np.ndarray]] = []
    plan = CompilePlan(inputs.model, config.compile, len(inputs.items), device)  # no-op for k-means
    done = 0
    for batch in loader():
        started = time.perf_counter()
        ok = [it for it in batch if "error" not in it]
        skipped += [(it["file_name"], it["error"]) for it in batch if "error" in it]
        if ok:
            if kmeans is not None:
                preds = []
                for it in ok:
                    pix = np.ascontiguousarray(it["rgb"].flatten(1).t().numpy(), dtype=np.float32)
                    preds.append(kmeans.index.search(pix, 1)[1].reshape(res, res))
                pred = np.stack(preds)
            else:
                model = inputs.model
                x = torch.stack([it["tensor"] for it in ok]).to(device)
                pred = assign(prototype_scores(model, x), (res, res)).cpu().numpy()
            for p, it in zip(pred, ok, strict=True):
                acc.update(p, it["label"])
                if len(examples) < config.num_examples:
                    examples.append((it["id"], it["file_name"], p.astype(np.int64), it["label"]))
        done += len(batch)
        plan.after_first_batch(len(ok), time.perf_counter() - started, done)
        bar.update(len(batch))
    for name, why in skipped:
        logger.warning("skipped %s: %s", name, why)
    if acc.num_images == 0:
        raise ValueError(f"no image of {inputs.root} could be evaluated ({len(skipped)} skipped)")
    return Predictions(acc, examples, skipped, kmeans is not None)


def score(config: EvalConfig, inputs: EvalInputs, predictions: Predictions, seconds: float) -> EvalResult:
    """Hungarian-matched scores of the predictions, the matched confusion, the per-class table and the
    protocol's description (:class:`indexer.types.EvalResult`)."""
    names = inputs.labels.class_names
    result = predictions.confusion.scores(class_names=names)
    skipped = predictions.skipped
    result["counts"].update(skipped_images=len(skipped), evaluated_images=predictions.confusion.num_images)
    result.update(
        per_class_iou_named=dict(zip(names, result["per_class_iou"], strict=True)),
        matched_confusion=matched_confusion(result["confusion"], result["matching"], len(names)),
        per_class=class_table(names, result["per_class_iou"], result["counts"]["class_pixels"]),
        skipped=[{"file_name": n, "reason": r} for n, r in skipped[:100]],
        protocol={
            "name": config.protocol, "split": inputs.split, "resolution": config.resolution,
            "preprocessing": "shorter side resized (image bilinear, label nearest), centre crop, no CRF",
            "prediction": "nearest k-means centroid of each pixel's RGB" if predictions.kmeans
            else "teacher scores bilinearly resized, then argmax",
            "curated_list": str(config.curated_list) if config.curated_list else None,
            "subset": "curated list" if config.curated_list
            else f"all {inputs.split or 'folder'} images (no curated list)",
            "num_clusters": inputs.num_clusters, "num_classes": inputs.labels.num_classes,
            "unmatched_clusters": "counted wrong",
        },
        baseline=config.baseline,
        checkpoint=inputs.checkpoint.to_dict() if inputs.checkpoint else None,
        data_root=str(inputs.root),
        seconds=round(seconds, 3),
    )  # fmt: skip
    return EvalResult.from_dict(result)


def store(config: EvalConfig, inputs: EvalInputs, predictions: Predictions, result: EvalResult) -> EvalResult:
    """Stores ``result`` (with palette PNGs of the examples, predictions mapped to their matched classes)
    in ``config.index_dir`` and writes ``config.out``; returns the result with its ``eval_id``."""
    from indexer.store import ConceptIndex

    if config.index_dir is not None:
        mapping = np.array([m if m is not None else IGNORE_LABEL for m in result.matching], dtype=np.uint8)
        pngs = [(i, n, palette_png(mapping[p]), palette_png(g)) for i, n, p, g in predictions.examples]
        sha = inputs.checkpoint.sha256 if inputs.checkpoint else None
        with ConceptIndex.open(config.index_dir, sha) as index:
            result = dataclasses.replace(result, eval_id=index.store_eval(result, pngs))
    if config.out is not None:
        result.save(config.out)
    return result


def run_eval(config: EvalConfig) -> EvalResult:
    """Evaluates a checkpoint (or a baseline): :func:`load` → :func:`predict` → :func:`score` → :func:`store`.

    Returns the :class:`indexer.types.EvalResult` (the eval CLI's JSON): ``miou``, ``pixel_accuracy`` as
    fractions, ``per_class``, ``matching``, ``confusion`` and ``matched_confusion``, ``many_to_one``,
    ``counts``, the ``protocol``'s choices, ``baseline``, ``checkpoint``, ``seconds``, and ``eval_id`` when
    stored in ``config.index_dir`` (IndexMismatchError if that index was built from another checkpoint).
    """
    started = time.time()
    inputs = load(config)
    bar = Progress(len(inputs.items), "eval", config.progress_file, bar=config.show_progress)
    predictions = predict(config, inputs, bar)
    result = score(config, inputs, predictions, time.time() - started)
    result = store(config, inputs, predictions, result)
    bar.close("done")
    return result
