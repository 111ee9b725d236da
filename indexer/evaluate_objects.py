"""Slots as objects and prototypes as concepts: object-discovery scores and a dissection of the prototypes.

**Object discovery** (the object-centric literature's FG-ARI and mBO). An image's slot masks are its
prototype argmax at the evaluation's crop (:func:`core.inference.assign`); its instance masks are the
things annotated in it (COCO's ``annotations/instances_<split>.json``, which the synthetic scenes also
write), resized and cropped as the labels are (nearest). Then, per image:

- **FG-ARI**: the adjusted Rand index (Hubert and Arabie; scikit-learn's ``adjusted_rand_score``, its
  special cases included) between the slot ids and the instance ids on the *foreground* pixels only: pixels
  of exactly one non-crowd instance. Background, crowd regions and pixels where instances overlap are not
  counted. An image without a foreground pixel has no FG-ARI (not averaged).
- **mBO**: for each non-crowd instance with a pixel in the crop, the best IoU of its mask with any slot
  mask (slot masks cover the whole crop, background included); the image's mBO is their mean.

``fg_ari`` and ``mbo_image`` average the per-image values over images, ``mbo_instance`` the per-instance
best overlaps over every instance. Each image is scored when it arrives and only sums and a few example
images are kept, so memory is flat in the image count (:class:`ObjectDiscoveryAccumulator`).

**Dissection** (Network Dissection's per-unit IoU; COMUS's count of classes found): the IoU of every
prototype's mask with every labelled class over the evaluated images, from the evaluation's cluster × class
confusion of labelled pixels (unlabelled pixels count for neither): ``IoU(k, c) = n_kc / (n_k + n_c - n_kc)``.
Each prototype's best class and IoU; the model's ``classes_found``: classes that some prototype overlaps
with IoU above the threshold (0.2 by default).
"""

from __future__ import annotations

import heapq
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from indexer.types import (
    DissectionPrototype,
    DissectionResult,
    ObjectDiscoveryExample,
    ObjectDiscoveryResult,
    ScoreTag,
    StoredEval,
)

#: The metrics ``slotcon eval --metric`` computes (the semantic scores always; the others on request).
METRICS = ("segmentation", "object-discovery", "dissection")
#: IoU above which a prototype finds a class (COMUS's 20 %).
DISSECTION_THRESHOLD = 0.2
#: Best and worst images kept as examples (each).
OBJECT_EXAMPLES = 3


# ---------------------------------------------------------------- instance masks
def instances_path(root: str | os.PathLike, split: str | None) -> Path:
    """``<root>/annotations/instances_<split>.json`` (COCO's and the synthetic scenes' layout)."""
    return Path(root) / "annotations" / f"instances_{split or 'val2017'}.json"


class InstanceAnnotations:
    """The instance annotations of one split, read once: per image file name its (RLE, crowd) pairs, as
    compact RLE strings (COCO val2017's 36,781 instances take tens of MB, never a decoded mask)."""

    def __init__(self, path: str | os.PathLike) -> None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"object discovery needs instance annotations: {path} not found")
        data = json.loads(path.read_text())
        by_id = {int(im["id"]): im for im in data.get("images", [])}
        self.sizes: dict[str, tuple[int, int]] = {}
        self.anns: dict[str, list[tuple[Any, bool]]] = {}
        for im in by_id.values():
            name = Path(im["file_name"]).name
            self.sizes[name] = (int(im["height"]), int(im["width"]))
            self.anns[name] = []
        for ann in data.get("annotations", []):
            im = by_id.get(int(ann["image_id"]))
            if im is not None:
                self.anns[Path(im["file_name"]).name].append((ann["segmentation"], bool(ann.get("iscrowd", 0))))

    def masks(self, file_name: str) -> tuple[np.ndarray, np.ndarray]:
        """(N, H, W) uint8 instance masks of an image at its annotated size and (N,) crowd flags; KeyError
        for an image the annotations do not list."""
        from pycocotools import mask as mask_utils

        name = Path(file_name).name
        h, w = self.sizes[name]
        masks, crowd = [], []
        for seg, is_crowd in self.anns[name]:
            if isinstance(seg, list):  # polygons
                rle = mask_utils.merge(mask_utils.frPyObjects(seg, h, w))
            elif isinstance(seg.get("counts"), list):  # uncompressed RLE (COCO's crowd regions)
                rle = mask_utils.frPyObjects(seg, h, w)
            else:
                rle = {"size": seg["size"], "counts": seg["counts"].encode("ascii")}
            masks.append(mask_utils.decode(rle))
            crowd.append(is_crowd)
        if not masks:
            return np.zeros((0, h, w), np.uint8), np.zeros(0, bool)
        return np.stack(masks), np.asarray(crowd, bool)


# ---------------------------------------------------------------- per-image scores
def adjusted_rand_index(true: np.ndarray, pred: np.ndarray) -> float:
    """The adjusted Rand index of two labelings of the same pixels (1-D integer arrays), as scikit-learn's
    ``adjusted_rand_score`` computes it (from the pair confusion matrix; 1.0 when the two agree on every
    pair, including one cluster on both sides); exact integer arithmetic, so large images do not overflow."""
    n = int(true.size)
    if n == 0:
        raise ValueError("no pixel to score")
    t, p = np.asarray(true, np.int64).ravel(), np.asarray(pred, np.int64).ravel()
    if t.min() < 0 or p.min() < 0:  # ids as bincount indices; empty ids only add zeros to every sum below
        t, p = np.unique(t, return_inverse=True)[1].ravel(), np.unique(p, return_inverse=True)[1].ravel()
    cont = np.bincount(t * (int(p.max()) + 1) + p)
    sum_squares = int((cont.astype(object) ** 2).sum())
    n_true = np.bincount(t).astype(object)
    n_pred = np.bincount(p).astype(object)
    same_both = sum_squares - n  # ordered pairs together in both (C[1, 1])
    pred_only = int((n_pred**2).sum()) - sum_squares  # together in pred only (C[0, 1])
    true_only = int((n_true**2).sum()) - sum_squares  # together in true only (C[1, 0])
    neither = n * n - pred_only - true_only - sum_squares  # C[0, 0]
    if pred_only == 0 and true_only == 0:
        return 1.0
    num = 2 * (same_both * neither - true_only * pred_only)
    den = (same_both + true_only) * (true_only + neither) + (same_both + pred_only) * (pred_only + neither)
    return float(num / den)


def best_overlaps(slots: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """(N,) float: each instance mask's best IoU with any slot mask. ``slots``: (H, W) slot ids; ``masks``:
    (N, H, W) binary masks of the instances (each with at least one pixel)."""
    flat = slots.ravel().astype(np.int64)
    k = int(flat.max()) + 1 if flat.size else 0
    slot_sizes = np.bincount(flat, minlength=k)
    best = np.zeros(len(masks))
    for i, m in enumerate(masks):
        inside = m.ravel().astype(bool)
        inter = np.bincount(flat[inside], minlength=k)
        union = slot_sizes + int(inside.sum()) - inter
        best[i] = float((inter / np.maximum(union, 1)).max())
    return best


@dataclass(order=True)
class _Ranked:
    key: float
    order: int
    example: ObjectDiscoveryExample = field(compare=False)


def instances_png(ids: np.ndarray) -> bytes:
    """PNG bytes of an (H, W) instance map (0: background, drawn black; instance i in the palette's colour
    i - 1, as slot i - 1 would be)."""
    from indexer.segments import palette, palette_png

    colors = palette(256)
    return palette_png(ids, np.concatenate([np.zeros((1, 3), colors.dtype), colors[:255]]))


class ObjectDiscoveryAccumulator:
    """Scores images one at a time (:meth:`update`) and keeps only sums and the ``num_examples`` best and
    worst images (by FG-ARI, else mBO), so memory does not grow with the image count."""

    def __init__(self, num_examples: int = OBJECT_EXAMPLES) -> None:
        self.num_examples = num_examples
        self.ari_sum, self.ari_images = 0.0, 0
        self.mbo_image_sum, self.images = 0.0, 0
        self.mbo_instance_sum, self.instances = 0.0, 0
        self.crowd_instances = 0
        self.images_without_instances = 0
        self._best: list[_Ranked] = []  # min-heap of the best (smallest kept key first)
        self._worst: list[_Ranked] = []  # min-heap of negated keys
        self._seen = 0

    def update(
        self, slots: np.ndarray, masks: np.ndarray, crowd: np.ndarray, image_id: int = 0, file_name: str = ""
    ) -> tuple[float | None, float | None]:
        """Adds one image: ``slots`` (H, W) slot ids, ``masks`` (N, H, W) instance masks at the same size,
        ``crowd`` (N,) flags. Returns the image's (FG-ARI, mBO), None where undefined."""
        masks = np.asarray(masks).astype(bool)
        crowd = np.asarray(crowd, bool)
        if masks.shape[1:] != slots.shape and len(masks):
            raise ValueError(f"instance masks {masks.shape[1:]} != slot map {slots.shape}")
        self.crowd_instances += int(crowd.sum())
        kept = masks[~crowd]
        kept = kept[kept.reshape(len(kept), -1).any(1)] if len(kept) else kept
        if len(kept) == 0:
            self.images_without_instances += 1
            return None, None
        cover = kept.sum(0)
        foreground = cover == 1
        if len(masks) > len(kept) and crowd.any():
            foreground &= ~masks[crowd].any(0)
        ari = None
        if foreground.any():
            ids = kept.argmax(0)
            ari = adjusted_rand_index(ids[foreground], slots[foreground])
            self.ari_sum += ari
            self.ari_images += 1
        best = best_overlaps(slots, kept)
        mbo = float(best.mean())
        self.mbo_image_sum += mbo
        self.images += 1
        self.mbo_instance_sum += float(best.sum())
        self.instances += len(kept)
        self._keep(slots, kept, image_id, file_name, ari, mbo)
        return ari, mbo

    def _keep(
        self, slots: np.ndarray, kept: np.ndarray, image_id: int, file_name: str, ari: float | None, mbo: float
    ) -> None:
        if self.num_examples <= 0:
            return
        key = ari if ari is not None else mbo
        self._seen += 1

        def example() -> ObjectDiscoveryExample:
            import base64

            from indexer.segments import palette_png

            inst = np.zeros(slots.shape, np.int64)
            for i, m in enumerate(kept):
                inst[m] = i + 1
            return ObjectDiscoveryExample(
                image_id=int(image_id), file_name=file_name, fg_ari=ari, mbo=mbo, instances=len(kept),
                slots_png=base64.b64encode(palette_png(slots)).decode(),
                instances_png=base64.b64encode(instances_png(inst)).decode(),
            )  # fmt: skip

        for heap, k in ((self._best, key), (self._worst, -key)):
            if len(heap) < self.num_examples:
                heapq.heappush(heap, _Ranked(k, -self._seen, example()))
            elif k > heap[0].key:
                heapq.heapreplace(heap, _Ranked(k, -self._seen, example()))

    def result(self, tag: ScoreTag | None) -> ObjectDiscoveryResult:
        """The scores (means over images and over instances; None without any) with ``tag``."""
        return ObjectDiscoveryResult(
            fg_ari=self.ari_sum / self.ari_images if self.ari_images else None,
            mbo_image=self.mbo_image_sum / self.images if self.images else None,
            mbo_instance=self.mbo_instance_sum / self.instances if self.instances else None,
            images=self.images,
            instances=self.instances,
            fg_ari_images=self.ari_images,
            images_without_instances=self.images_without_instances,
            crowd_instances=self.crowd_instances,
            tag=tag,
            best=[r.example for r in sorted(self._best, reverse=True)],
            worst=[r.example for r in sorted(self._worst, reverse=True)],
        )


# ---------------------------------------------------------------- dissection
def latest_dissection(stored: Sequence[StoredEval]) -> tuple[int, DissectionResult] | None:
    """(evaluation id, dissection) of the newest stored evaluation of the model (no baseline) with a
    dissection, else None (``stored`` as ``ConceptIndex.eval_results`` lists them, newest first)."""
    found = [s for s in stored if s.result.dissection is not None and s.result.baseline == "none"]
    if not found:
        return None
    newest = max(found, key=lambda s: s.id)
    return newest.id, newest.result.dissection  # type: ignore[return-value]


def best_iou_by_prototype(stored: Sequence[StoredEval]) -> dict[int, float]:
    """{prototype: best IoU with a class} of the newest dissection (empty without one)."""
    latest = latest_dissection(stored)
    return {} if latest is None else {r.prototype: r.best_iou for r in latest[1].prototypes}


def dissection_iou(confusion: Any) -> np.ndarray:
    """(K, C) IoU of every prototype's mask with every class's, from a K × C confusion of labelled pixel
    counts (0 where both are empty)."""
    conf = np.asarray(confusion, dtype=np.float64)
    union = conf.sum(1, keepdims=True) + conf.sum(0, keepdims=True) - conf
    return np.where(union > 0, conf / np.maximum(union, 1), 0.0)


def dissect(
    confusion: Any,
    class_names: Sequence[str],
    threshold: float = DISSECTION_THRESHOLD,
    tag: ScoreTag | None = None,
) -> DissectionResult:
    """Per prototype its IoU row, best class (None for a prototype with no labelled pixel) and best IoU; for
    the model the classes whose best prototype IoU is above ``threshold`` (``classes_found``)."""
    iou = dissection_iou(confusion)
    k, c = iou.shape
    if len(class_names) != c:
        raise ValueError(f"{len(class_names)} class names for {c} classes")
    pixels = np.asarray(confusion, dtype=np.int64).sum(1)
    rows = []
    for p in range(k):
        best = int(iou[p].argmax()) if c and pixels[p] > 0 else None
        rows.append(
            DissectionPrototype(
                prototype=p,
                best_class=best,
                best_class_name=class_names[best] if best is not None else None,
                best_iou=float(iou[p, best]) if best is not None else 0.0,
                pixels=int(pixels[p]),
                iou=[float(v) for v in iou[p]],
            )
        )
    per_class = iou.max(0) if k else np.zeros(c)
    found = [int(j) for j in range(c) if per_class[j] > threshold]
    return DissectionResult(
        threshold=float(threshold),
        classes_found=len(found),
        found_classes=[class_names[j] for j in found],
        num_classes=c,
        class_names=list(class_names),
        class_best_iou=[float(v) for v in per_class],
        prototypes=rows,
        tag=tag,
    )
