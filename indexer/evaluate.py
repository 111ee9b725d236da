"""Unsupervised semantic segmentation evaluation (docs/method.md §7, docs/evaluation.md).

Each image: shorter side resized to ``resolution`` (image bilinear, label nearest), centre crop
``resolution``², no CRF; teacher scores bilinearly resized to the crop, then argmax (the cluster map).
Confusion over the whole set, one-to-one Hungarian matching, pixel accuracy / per-class IoU / mIoU
(unmatched clusters count as wrong), many-to-one beside it (:mod:`indexer.unsupervised`).

Baselines on the same protocol: ``random-init`` (the checkpoint's architecture, untrained, seeded)
and ``kmeans-rgb`` (k-means on pixel colours with the same number of clusters, one fit per seed).

The images: ``--protocol cocostuff27`` on val2017 scores the shipped curated list by default
(:mod:`indexer.evaluate_images`). The scores side by side (:attr:`EvalResult.scores`), each tagged with how
it was measured (:mod:`indexer.evaluate_tag`): one-to-one Hungarian with the checkpoint's K, many-to-one,
and, when K differs from the class count, the cluster probe (:mod:`indexer.unsupervised_probe`); the
k-means baseline and the probe run ``seeds`` seeds and report mean and standard deviation.

On request (``metrics``), the same pass also scores the slots as objects (FG-ARI and mBO against the
instance masks) and dissects the prototypes against the classes (:mod:`indexer.evaluate_objects`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import faiss
import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torch.utils.data import DataLoader

from core.augment import IMAGENET_MEAN, IMAGENET_STD
from core.checkpoint import file_sha256
from core.datasets import load_rgb, loader_workers
from core.infer_model import CompilePlan, InferOptions, inference_model_for, inference_model_of
from core.inference import assign, teacher_outputs
from core.model import SlotCon
from core.recipes import BASELINES, EVAL_RESOLUTION, IGNORE_LABEL
from indexer.build import local_processes, resolve_images
from indexer.eval_record import read_eval_result
from indexer.evaluate_images import MISSING_NAMED, ImageSelection, select_images
from indexer.evaluate_objects import (
    DISSECTION_THRESHOLD,
    METRICS,
    OBJECT_EXAMPLES,
    InstanceAnnotations,
    ObjectDiscoveryAccumulator,
    dissect,
    instances_path,
)
from indexer.evaluate_tag import CENTRE, EVAL_SEEDS, check_against, make_tag, mean_std
from indexer.image_items import ListedImages
from indexer.labels import LabelProtocol, LabelSizeError, make_protocol
from indexer.progress import Progress
from indexer.segments import palette, palette_png
from indexer.types import CheckpointRef, EvalResult, ImageList, Score, SeedRun
from indexer.unsupervised import ConfusionAccumulator, class_table, matched_confusion
from indexer.unsupervised_crf import crf_assign, require_crf
from indexer.unsupervised_probe import ClusterProbe, ProbeRun

logger = logging.getLogger(__name__)


def crop_masks(masks: np.ndarray, resolution: int) -> np.ndarray:
    """(N, res, res) uint8: instance masks (N, H, W) resized and centre-cropped as the label maps are."""
    out = np.zeros((len(masks), resolution, resolution), np.uint8)
    for i, m in enumerate(masks):
        im = TF.resize(Image.fromarray(m), resolution, TF.InterpolationMode.NEAREST)
        out[i] = np.asarray(TF.center_crop(im, [resolution, resolution]))
    return out


class EvalSet(ListedImages):
    """(normalised image, label crop) at the protocol resolution, and the instance masks cropped alike when
    ``instances`` is given (``None`` for an image they do not list); failures are returned as ``error``.
    ``labels_optional``: an image without a class map gets an all-unlabelled one (object discovery alone)."""

    def __init__(
        self,
        items: list[tuple[int, Path]],
        root: Path,
        protocol: LabelProtocol,
        resolution: int,
        instances: InstanceAnnotations | None = None,
        labels_optional: bool = False,
    ) -> None:
        super().__init__(items, root)
        self.protocol, self.res = protocol, resolution
        self.instances, self.labels_optional = instances, labels_optional

    def __getitem__(self, i: int) -> dict:
        item, path = self.item_of(i)
        try:
            img = load_rgb(path, upright=False)  # the label map's frame (no EXIF orientation)
        except Exception as e:  # noqa: BLE001 - any decoding failure skips the image
            item["error"] = f"decode failed: {e}"
            return item
        try:
            label = self.protocol.load(path, img.size)
        except FileNotFoundError as e:
            if not self.labels_optional:
                item["error"] = f"label: {e}"
                return item
            # object discovery alone reads only the instances: an image without a class map is all unlabelled
            label = np.full((img.size[1], img.size[0]), IGNORE_LABEL, np.uint8)
        except (LabelSizeError, ValueError, OSError) as e:
            item["error"] = f"label: {e}"
            return item
        img = TF.center_crop(TF.resize(img, self.res, TF.InterpolationMode.BILINEAR), [self.res, self.res])
        lab = Image.fromarray(label)
        lab = TF.center_crop(TF.resize(lab, self.res, TF.InterpolationMode.NEAREST), [self.res, self.res])
        rgb = TF.to_tensor(img)
        item["rgb"] = rgb
        item["tensor"] = TF.normalize(rgb, IMAGENET_MEAN, IMAGENET_STD)
        item["label"] = np.asarray(lab, dtype=np.uint8)
        if self.instances is not None:
            try:
                masks, crowd = self.instances.masks(path.name)
            except KeyError:
                masks, crowd = None, None
            if masks is not None and masks.shape[1:] != label.shape:
                item["error"] = (
                    f"instance masks are {masks.shape[2]}x{masks.shape[1]}, the image {label.shape[1]}x{label.shape[0]}"
                )
                return item
            item["instances"] = None if masks is None else (crop_masks(masks, self.res), crowd)
        return item


def class_map_png(labels: np.ndarray) -> bytes:
    """PNG bytes of an (H, W) uint8 class map in the project's palette (255, unlabelled → black)."""
    colors = palette(256).copy()
    colors[IGNORE_LABEL] = 0
    return palette_png(labels, colors)


def _fit_kmeans(
    loader: DataLoader, k: int, seeds: list[int], per_image: int = 2000, max_points: int = 400_000
) -> list[faiss.Kmeans]:
    """One RGB k-means per seed, each fitted on its own sample of pixel colours (drawn with its seed, in one
    pass over the images), so a seed's run is the same alone or among others."""
    rngs = [np.random.default_rng(seed) for seed in seeds]
    samples: list[list[np.ndarray]] = [[] for _ in seeds]
    total = 0
    for batch in loader:
        for it in batch:
            if "error" in it or total >= max_points:
                continue
            pix = it["rgb"].flatten(1).t().numpy()  # (HW, 3)
            n = min(per_image, len(pix))
            for rng, sample in zip(rngs, samples, strict=True):
                sample.append(pix[rng.choice(len(pix), size=n, replace=False)])
            total += n
    if not samples[0]:
        raise ValueError("no image to fit k-means on")
    fitted = []
    for seed, sample in zip(seeds, samples, strict=True):
        km = faiss.Kmeans(3, k, niter=25, seed=seed, verbose=False, min_points_per_centroid=1)
        km.train(np.ascontiguousarray(np.concatenate(sample), dtype=np.float32))
        fitted.append(km)
    return fitted


@dataclass(frozen=True)
class EvalConfig:
    """One evaluation: a checkpoint (None only for ``kmeans-rgb``) or a baseline on ``protocol``
    (``cocostuff27`` or ``synthetic``) of ``data_root``/``split``.

    Images: ``curated_list``, else the protocol's default list (the shipped curated list for COCO-Stuff-27's
    val2017), else all; ``all_images`` scores every image. ``seeds``: runs of the k-means baseline and the
    cluster probe (seeds ``seed``, ``seed + 1``, ...); ``probe``: the cluster probe when K differs from the
    class count (False: never); ``crf``: STEGO's dense CRF on the model's maps before matching
    (:mod:`indexer.unsupervised_crf`; not on the probe's or the k-means baseline's). ``index_dir``: also
    store the result (and ``num_examples`` prediction/ground-truth pairs) in that index, which must be built
    from the same checkpoint; ``out``: also write the JSON there; ``fused``: the inference model
    (:mod:`core.infer_model`), False for the plain full model (A/B runs); ``inference``: how the inference
    model runs (:class:`core.infer_model.InferOptions`). ``metrics``: besides the semantic scores (always
    computed; the cluster probe only with ``segmentation``), ``object-discovery`` (instance masks from
    ``data_root/annotations/instances_<split>.json``) and ``dissection`` (classes found above
    ``dissection_threshold``), see :mod:`indexer.evaluate_objects`."""

    checkpoint: str | os.PathLike | None
    data_root: str | os.PathLike
    protocol: str
    split: str = "val2017"
    curated_list: str | os.PathLike | None = None
    all_images: bool = False
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
    seeds: int = EVAL_SEEDS
    probe: bool = True
    crf: bool = False
    limit: int | None = None
    show_progress: bool = False
    fused: bool = True
    inference: InferOptions = field(default_factory=InferOptions)
    compile: bool | None = None  # torch.compile the model; None: when the job pays it back (CompilePlan)
    metrics: tuple[str, ...] = ("segmentation",)
    dissection_threshold: float = DISSECTION_THRESHOLD
    object_examples: int = OBJECT_EXAMPLES


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
    images: ImageSelection
    instances: InstanceAnnotations | None = None


@dataclass
class Predictions:
    """What :func:`predict` produced: one streamed confusion per seed (one for a model), example maps of the
    first, skipped images, and the cluster probe's runs (empty when it did not run)."""

    confusions: list[ConfusionAccumulator]
    seeds: list[int]
    examples: list[tuple[int, str, np.ndarray, np.ndarray]]
    skipped: list[tuple[str, str]]
    kmeans: bool
    probe: list[ProbeRun] = field(default_factory=list)
    objects: ObjectDiscoveryAccumulator | None = None

    @property
    def confusion(self) -> ConfusionAccumulator:
        """The first seed's confusion (the only one of a model)."""
        return self.confusions[0]


def load(config: EvalConfig) -> EvalInputs:
    """Resolves the images (:func:`indexer.evaluate_images.select_images`), the label protocol, the model or
    baseline and K; refuses a foreign ``index_dir`` before any compute (IndexMismatchError)."""
    from indexer.store import ConceptIndex  # late: store imports faiss too, keeps import order simple

    if config.baseline not in BASELINES:
        raise ValueError(f"unknown baseline {config.baseline!r}; choose one of: {', '.join(BASELINES)}")
    if config.seeds < 1:
        raise ValueError(f"seeds must be at least 1, got {config.seeds}")
    unknown = [m for m in config.metrics if m not in METRICS]
    if unknown or not config.metrics:
        raise ValueError(f"unknown metric {unknown or config.metrics!r}; choose from: {', '.join(METRICS)}")
    if not 0 <= config.dissection_threshold < 1:
        raise ValueError(f"dissection threshold must be in [0, 1), got {config.dissection_threshold}")
    if config.crf:
        require_crf()
    root, split_used, paths = resolve_images(config.data_root, config.split)
    labels = make_protocol(config.protocol, root, split_used or config.split)
    images = select_images(
        paths, protocol=config.protocol, split=split_used, curated_list=config.curated_list,
        all_images=config.all_images, limit=config.limit,
    )  # fmt: skip
    ref, model, k = None, None, config.clusters
    if config.checkpoint is not None:
        dev = torch.device(config.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        model = inference_model_for(config.checkpoint, dev, fused=config.fused, options=config.inference)
        ref = CheckpointRef(path=str(Path(config.checkpoint).resolve()), sha256=file_sha256(config.checkpoint))
        k = k or model.config.num_prototypes
        if config.baseline == "random-init":
            torch.manual_seed(config.seed)
            untrained = SlotCon(model.config)
            if config.fused:
                model = inference_model_of(untrained, config.inference).prepare(dev)
            else:
                model = untrained.to(dev).eval()
    elif config.baseline != "kmeans-rgb":
        raise ValueError("a checkpoint is required (only --baseline kmeans-rgb runs without one)")
    if model is not None and config.baseline == "kmeans-rgb":
        model = None  # k-means on colours: the checkpoint only gives K
    instances = None
    if "object-discovery" in config.metrics:  # read before any compute: a missing file is an error now
        instances = InstanceAnnotations(instances_path(root, split_used or config.split))
    if config.index_dir is not None:
        ConceptIndex.open(config.index_dir, ref.sha256 if ref else None).close()
    return EvalInputs(root, split_used, images.items, labels, model, k or labels.num_classes, ref, images, instances)


def _seeds(config: EvalConfig) -> list[int]:
    return [config.seed + i for i in range(config.seeds)]


def predict(config: EvalConfig, inputs: EvalInputs, bar: Progress) -> Predictions:
    """Streams the images through the model (or the k-means baselines, one per seed), accumulating the
    K×C confusions; collects the cluster probe's features when K differs from the class count."""
    res = config.resolution
    # the model's device; the k-means baseline runs on the CPU (FAISS)
    device = next(inputs.model.parameters()).device if inputs.model is not None else torch.device("cpu")
    workers = loader_workers(config.workers, device, local_processes())
    num_classes = inputs.labels.num_classes

    def loader() -> DataLoader:
        only_objects = set(config.metrics) == {"object-discovery"}  # class maps not needed
        images = EvalSet(inputs.items, inputs.root, inputs.labels, res, inputs.instances, only_objects)
        return DataLoader(images, batch_size=config.batch_size, num_workers=workers, collate_fn=list)

    kmeans: list[faiss.Kmeans] = []
    seeds = _seeds(config) if config.baseline == "kmeans-rgb" else [config.seed]
    if config.baseline == "kmeans-rgb":
        bar.set_stage("kmeans-fit")
        kmeans = _fit_kmeans(loader(), inputs.num_clusters, seeds)
        bar.set_stage("eval")
    accs = [ConfusionAccumulator(num_classes, num_clusters=inputs.num_clusters) for _ in seeds]
    probe = None
    segmentation = "segmentation" in config.metrics
    if inputs.model is not None and config.probe and segmentation and inputs.num_clusters != num_classes:
        probe = ClusterProbe(num_classes, res, len(inputs.items))
    objects = ObjectDiscoveryAccumulator(config.object_examples) if inputs.instances is not None else None
    skipped: list[tuple[str, str]] = []
    examples: list[tuple[int, str, np.ndarray, np.ndarray]] = []
    plan = CompilePlan(inputs.model, config.compile, len(inputs.items), device)  # no-op for k-means
    done = 0
    for batch in loader():
        started = time.perf_counter()
        ok = [it for it in batch if "error" not in it]
        skipped += [(it["file_name"], it["error"]) for it in batch if "error" in it]
        if ok:
            if kmeans:
                pixels = [np.ascontiguousarray(it["rgb"].flatten(1).t().numpy(), dtype=np.float32) for it in ok]
                preds = [np.stack([km.index.search(pix, 1)[1].reshape(res, res) for pix in pixels]) for km in kmeans]
            else:
                x = torch.stack([it["tensor"] for it in ok]).to(device)
                z, scores = teacher_outputs(inputs.model, x)  # (B, D, h, w) normalised, (B, K, h, w)
                if config.crf:
                    preds = [crf_assign(torch.stack([it["rgb"] for it in ok]), scores.cpu(), (res, res))]
                else:
                    preds = [assign(scores, (res, res)).cpu().numpy()]
                if probe is not None:
                    probe.add(z, [it["label"] for it in ok])
            for acc, pred in zip(accs, preds, strict=True):
                for p, it in zip(pred, ok, strict=True):
                    acc.update(p, it["label"])
            for p, it in zip(preds[0], ok, strict=True):
                if objects is not None and it["instances"] is not None:
                    objects.update(p, *it["instances"], image_id=it["id"], file_name=it["file_name"])
                elif objects is not None:
                    objects.images_without_instances += 1  # not listed in the annotations
                if len(examples) < config.num_examples:
                    examples.append((it["id"], it["file_name"], p.astype(np.int64), it["label"]))
        done += len(batch)
        plan.after_first_batch(len(ok), time.perf_counter() - started, done)
        bar.update(len(batch))
    for name, why in skipped:
        logger.warning("skipped %s: %s", name, why)
    if accs[0].num_images == 0:
        raise ValueError(f"no image of {inputs.root} could be evaluated ({len(skipped)} skipped)")
    runs = []
    if probe is not None:
        bar.set_stage("cluster-probe")
        runs = probe.run(_seeds(config))
    return Predictions(accs, seeds, examples, skipped, bool(kmeans), runs, objects)


def _score_rows(config: EvalConfig, inputs: EvalInputs, predictions: Predictions, images: ImageList) -> list[dict]:
    """The scores side by side, each with its tag and its check against the paper's row."""
    method = {"none": "SlotCon"}.get(config.baseline, config.baseline)
    tag = partial(make_tag, config.protocol, images, k=inputs.num_clusters, resolution=config.resolution)
    per_seed = [acc.scores() for acc in predictions.confusions]
    rows = []

    crf = config.crf and not predictions.kmeans  # the CRF refines the model's maps, not the probe's
    seeded = config.baseline != "none"  # a trained model's maps involve no seed: its scores list no runs

    def row(matching: str, runs: list[tuple[int, float | None, float | None]]) -> None:
        t = tag(matching=matching, seeds=len(runs), crf=crf and matching != "cluster-probe")
        miou, miou_std = mean_std([r[1] for r in runs])
        acc, acc_std = mean_std([r[2] for r in runs])
        rows.append(Score(
            method, matching, miou, acc, t, check_against(t), miou_std, acc_std,
            [SeedRun(seed, m, a) for seed, m, a in runs] if seeded or matching == "cluster-probe" else [],
        ).to_dict())  # fmt: skip

    seeds = predictions.seeds
    row("one-to-one", [(s, r["miou"], r["pixel_accuracy"]) for s, r in zip(seeds, per_seed, strict=True)])
    row("many-to-one", [(s, r["many_to_one"]["miou"], r["many_to_one"]["pixel_accuracy"])
                        for s, r in zip(seeds, per_seed, strict=True)])  # fmt: skip
    if predictions.probe:
        probe = [(run.seed, run.confusion.scores()) for run in predictions.probe]
        row("cluster-probe", [(seed, r["miou"], r["pixel_accuracy"]) for seed, r in probe])
    return rows


def score(config: EvalConfig, inputs: EvalInputs, predictions: Predictions, seconds: float) -> EvalResult:
    """Hungarian-matched scores of the predictions (the first seed's confusion, matching and per-class table;
    ``miou`` and ``pixel_accuracy`` the mean over seeds), the scores side by side with their tags, the matched
    confusion, the per-class table and the protocol's description (:class:`indexer.types.EvalResult`)."""
    names = inputs.labels.class_names
    result = predictions.confusion.scores(class_names=names)
    skipped = predictions.skipped
    used = predictions.confusion.num_images
    result["counts"].update(skipped_images=len(skipped), evaluated_images=used)
    sel = inputs.images
    images = ImageList(sel.name, used, sel.listed, len(sel.missing))
    rows = _score_rows(config, inputs, predictions, images)
    one, many = rows[0], rows[1]
    result["many_to_one"].update(miou=many["miou"], pixel_accuracy=many["pixel_accuracy"], tag=many["tag"])
    result.update(
        miou=one["miou"], pixel_accuracy=one["pixel_accuracy"], tag=one["tag"], scores=rows,
        image_list=images.to_dict(), missing_images=sel.missing[:MISSING_NAMED],
        per_class_iou_named=dict(zip(names, result["per_class_iou"], strict=True)),
        matched_confusion=matched_confusion(result["confusion"], result["matching"], len(names)),
        per_class=class_table(names, result["per_class_iou"], result["counts"]["class_pixels"]),
        skipped=[{"file_name": n, "reason": r} for n, r in skipped[:100]],
        protocol={
            "name": config.protocol, "split": inputs.split, "resolution": config.resolution,
            "preprocessing": "shorter side resized (image bilinear, label nearest), centre crop, "
            + ("dense CRF (STEGO's settings) on the model's maps" if config.crf and not predictions.kmeans
               else "no CRF"),
            "prediction": "nearest k-means centroid of each pixel's RGB" if predictions.kmeans
            else "teacher scores bilinearly resized, then argmax",
            "curated_list": sel.path,
            "subset": f"{sel.name}: {used:,}/{sel.listed:,} images" + (f", {len(sel.missing):,} missing from the data"
                                                                       if sel.missing else ""),
            "num_clusters": inputs.num_clusters, "num_classes": inputs.labels.num_classes,
            "unmatched_clusters": "counted wrong", "crop": CENTRE, "crf": config.crf and not predictions.kmeans,
            "seeds": sorted({*predictions.seeds, *(run.seed for run in predictions.probe)}),
        },
        baseline=config.baseline,
        checkpoint=inputs.checkpoint.to_dict() if inputs.checkpoint else None,
        data_root=str(inputs.root),
        seconds=round(seconds, 3),
        metrics=[m for m in METRICS if m in config.metrics],
    )  # fmt: skip
    crf = config.crf and not predictions.kmeans
    tag = partial(make_tag, image_list=images, k=inputs.num_clusters, resolution=config.resolution, crf=crf)
    if predictions.objects is not None:
        # the ground truth is the instance masks, not the protocol's class maps: the benchmark says so
        objects_tag = tag(f"{config.protocol}-instances", matching="slots-to-instances")
        result["object_discovery"] = predictions.objects.result(objects_tag).to_dict()
    if "dissection" in config.metrics:
        dissection_tag = tag(config.protocol, matching="prototype-to-class")
        found = dissect(result["confusion"], names, config.dissection_threshold, dissection_tag)
        result["dissection"] = found.to_dict()
    return read_eval_result(result)


def store(config: EvalConfig, inputs: EvalInputs, predictions: Predictions, result: EvalResult) -> EvalResult:
    """Stores ``result`` (with palette PNGs of the examples, predictions mapped to their matched classes)
    in ``config.index_dir`` and writes ``config.out``; returns the result with its ``eval_id``."""
    from indexer.store import ConceptIndex

    if config.index_dir is not None:
        mapping = np.array([m if m is not None else IGNORE_LABEL for m in result.matching], dtype=np.uint8)
        pngs = [(i, n, class_map_png(mapping[p]), class_map_png(g)) for i, n, p, g in predictions.examples]
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
