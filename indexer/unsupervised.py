"""Unsupervised segmentation scores with Hungarian matching (docs/method.md §7, docs/evaluation.md).

Predictions are cluster ids (prototypes, ``0..K-1``); ground truth is class ids (``0..C-1``) with
``ignore_index`` for unlabelled pixels. A confusion matrix of (cluster, class) pixel counts is
accumulated over the whole evaluated set with ``np.bincount`` (bounded memory: one image at a time),
then:

- **one-to-one** (the reported score): clusters are matched to classes by the Hungarian algorithm
  (``scipy.optimize.linear_sum_assignment(confusion, maximize=True)``). When K > C, pixels of
  unmatched clusters count as **wrong** (false negatives of their true class, and in the pixel-accuracy
  denominator); STEGO's code drops them instead, which inflates scores.
- **many-to-one** (a second, labelled score): every cluster is mapped to its majority class.

Conventions of the result (JSON-ready: plain Python types, no NaN):

- ``miou`` and ``pixel_accuracy`` are **fractions in [0, 1]** (``"scale": "fraction"``); the UI shows
  percent.
- ``per_class_iou``: list of length C; ``None`` for a class absent from both the ground truth and the
  matched prediction (excluded from the mean).
- ``confusion``: K×C nested list, ``confusion[k][c]`` = pixels of cluster k whose class is c
  (``"confusion_layout": "clusters x classes"``).
- ``matching``: list of length K, ``matching[k]`` = the class matched to cluster k, or ``None``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from core.recipes import IGNORE_LABEL

__all__ = ["ConfusionAccumulator", "class_table", "hungarian_scores", "matched_confusion", "scores_from_confusion"]


def _as_int_array(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor
        x = x.detach().cpu().numpy()
    return np.asarray(x).astype(np.int64, copy=False).ravel()


class ConfusionAccumulator:
    """Streams (prediction, ground truth) label maps into a K×C confusion matrix of pixel counts.

    ``num_clusters`` may be omitted: the matrix grows to ``max(pred) + 1`` rows as maps arrive.
    Ground-truth pixels equal to ``ignore_index`` or outside ``[0, num_classes)`` are not counted
    (the latter are tallied in ``out_of_range_pixels``).
    """

    def __init__(self, num_classes: int, num_clusters: int | None = None, ignore_index: int = IGNORE_LABEL) -> None:
        if num_classes <= 0:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        self.fixed_clusters = num_clusters is not None
        self.confusion = np.zeros((int(num_clusters or 0), self.num_classes), dtype=np.int64)
        self.num_images = 0
        self.ignored_pixels = 0
        self.out_of_range_pixels = 0

    @property
    def num_clusters(self) -> int:
        """Rows of the confusion matrix (K)."""
        return self.confusion.shape[0]

    def update(self, pred: Any, gt: Any) -> None:
        """Add one label map pair (same shape; numpy arrays or torch tensors, any integer dtype)."""
        shape_p, shape_g = tuple(np.shape(pred)), tuple(np.shape(gt))
        if shape_p != shape_g:
            raise ValueError(f"prediction shape {shape_p} != ground truth {shape_g}")
        p, g = _as_int_array(pred), _as_int_array(gt)
        ignored = g == self.ignore_index
        in_range = (g >= 0) & (g < self.num_classes)
        self.ignored_pixels += int(ignored.sum())
        self.out_of_range_pixels += int((~ignored & ~in_range).sum())
        p, g = p[in_range], g[in_range]
        self.num_images += 1
        if p.size == 0:
            return
        if p.min() < 0:
            raise ValueError(f"prediction holds a negative cluster id ({int(p.min())})")
        k_needed = int(p.max()) + 1
        if k_needed > self.num_clusters:
            if self.fixed_clusters:
                raise ValueError(f"prediction holds cluster {k_needed - 1} but num_clusters={self.num_clusters}")
            grown = np.zeros((k_needed, self.num_classes), dtype=np.int64)
            grown[: self.num_clusters] = self.confusion
            self.confusion = grown
        counts = np.bincount(p * self.num_classes + g, minlength=self.confusion.size)
        self.confusion += counts.reshape(self.confusion.shape)

    def merge(self, other: ConfusionAccumulator) -> None:
        """Add another accumulator's counts (e.g. from another shard)."""
        k = max(self.num_clusters, other.num_clusters)
        out = np.zeros((k, self.num_classes), dtype=np.int64)
        out[: self.num_clusters] += self.confusion
        out[: other.num_clusters] += other.confusion
        self.confusion = out
        self.num_images += other.num_images
        self.ignored_pixels += other.ignored_pixels
        self.out_of_range_pixels += other.out_of_range_pixels

    def scores(self, class_names: Sequence[str] | None = None) -> dict[str, Any]:
        """The scores dict of :func:`scores_from_confusion` plus image/ignore counts."""
        result = scores_from_confusion(self.confusion, class_names=class_names)
        result["counts"].update(
            num_images=self.num_images,
            ignored_pixels=self.ignored_pixels,
            out_of_range_pixels=self.out_of_range_pixels,
        )
        return result


def _class_confusion(confusion: np.ndarray, mapping: np.ndarray) -> np.ndarray:
    """Collapse K×C cluster confusion to C×C (predicted class × true class); mapping[k] = -1 drops row k.

    Dropped rows' pixels are still counted as false negatives by :func:`_scores_for_mapping`.
    """
    c = confusion.shape[1]
    out = np.zeros((c, c), dtype=np.int64)
    keep = mapping >= 0
    np.add.at(out, mapping[keep], confusion[keep])
    return out


def _scores_for_mapping(confusion: np.ndarray, mapping: np.ndarray) -> tuple[float, float, np.ndarray]:
    """(mIoU, pixel accuracy, per-class IoU) when cluster k is predicted as class mapping[k] (-1: wrong)."""
    matched = _class_confusion(confusion, mapping)
    tp = np.diag(matched).astype(np.float64)
    fp = matched.sum(1) - tp
    fn = confusion.sum(0) - tp  # all labelled pixels of class c, unmatched clusters included
    denom = tp + fp + fn
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(denom > 0, tp / np.maximum(denom, 1), np.nan)
    total = confusion.sum()
    acc = float(tp.sum() / total) if total > 0 else float("nan")
    miou = float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")
    return miou, acc, iou


def _none_if_nan(x: float) -> float | None:
    return None if x is None or not np.isfinite(x) else float(x)


def scores_from_confusion(confusion: Any, class_names: Sequence[str] | None = None) -> dict[str, Any]:
    """Hungarian (one-to-one) and majority (many-to-one) scores of a K×C confusion of pixel counts.

    Returns a JSON-ready dict: ``miou``, ``pixel_accuracy`` (fractions in [0, 1]), ``per_class_iou``
    (length C, ``None`` for undefined classes), ``matching`` (length K, class or ``None``),
    ``matched_pairs`` ([cluster, class] rows), ``confusion`` (K×C list), ``many_to_one`` {``miou``,
    ``pixel_accuracy``, ``per_class_iou``, ``mapping``}, ``counts``, ``class_names`` when given, and
    the protocol flags ``unmatched_clusters_counted_wrong`` (True), ``scale`` ("fraction"),
    ``confusion_layout`` ("clusters x classes").
    """
    conf = np.asarray(confusion, dtype=np.int64)
    if conf.ndim != 2:
        raise ValueError(f"confusion must be 2-D (clusters x classes), got shape {conf.shape}")
    k, c = conf.shape
    if class_names is not None and len(class_names) != c:
        raise ValueError(f"{len(class_names)} class names for {c} classes")
    rows, cols = linear_sum_assignment(conf, maximize=True) if k and c else (np.array([], int),) * 2
    mapping = np.full(k, -1, dtype=np.int64)
    mapping[rows] = cols
    miou, acc, iou = _scores_for_mapping(conf, mapping)

    labelled = conf.sum(0) if k else np.zeros(c, np.int64)
    majority = np.where(conf.sum(1) > 0, conf.argmax(1) if c else -1, -1)
    m_miou, m_acc, m_iou = _scores_for_mapping(conf, majority)
    unmatched_rows = mapping < 0
    result: dict[str, Any] = {
        "miou": _none_if_nan(miou),
        "pixel_accuracy": _none_if_nan(acc),
        "per_class_iou": [_none_if_nan(v) for v in iou],
        "matching": [int(m) if m >= 0 else None for m in mapping],
        "matched_pairs": [[int(r), int(col)] for r, col in zip(rows, cols, strict=True)],
        "confusion": conf.tolist(),
        "confusion_layout": "clusters x classes",
        "many_to_one": {
            "miou": _none_if_nan(m_miou),
            "pixel_accuracy": _none_if_nan(m_acc),
            "per_class_iou": [_none_if_nan(v) for v in m_iou],
            "mapping": [int(m) if m >= 0 else None for m in majority],
            "label": "many-to-one (majority vote per cluster)",
        },
        "counts": {
            "num_clusters": int(k),
            "num_classes": int(c),
            "labelled_pixels": int(conf.sum()),
            "class_pixels": [int(v) for v in labelled],
            "matched_correct_pixels": int(sum(conf[r, col] for r, col in zip(rows, cols, strict=True))),
            "unmatched_cluster_pixels": int(conf[unmatched_rows].sum()),
            "unmatched_clusters": int(unmatched_rows.sum()),
        },
        "unmatched_clusters_counted_wrong": True,
        "matching_method": "one-to-one Hungarian (scipy.optimize.linear_sum_assignment, maximize=True)",
        "scale": "fraction",
    }
    if class_names is not None:
        result["class_names"] = list(class_names)
    return result


def matched_confusion(confusion: Any, matching: Sequence[int | None], num_classes: int) -> list[list[int]]:
    """The K×C cluster confusion folded through ``matching`` (cluster → class or None): a C × (C + 1)
    matrix of pixel counts, rows the ground-truth classes, columns the matched predicted classes and, last,
    the pixels of clusters matched to no class (counted wrong)."""
    conf = np.asarray(confusion, dtype=np.int64).reshape(-1, num_classes)
    folded = np.zeros((num_classes, num_classes + 1), dtype=np.int64)
    for k, row in enumerate(conf):
        c = matching[k] if k < len(matching) else None
        folded[:, num_classes if c is None else int(c)] += row
    return folded.tolist()


def class_table(names: Sequence[str], iou: Sequence[float | None], pixels: Sequence[int]) -> list[dict[str, Any]]:
    """One row per class: ``{"name", "iou", "pixels"}`` (labelled pixels of the class)."""
    return [{"name": str(n), "iou": v, "pixels": int(p)} for n, v, p in zip(names, iou, pixels, strict=True)]


def _is_single_map(x: Any) -> bool:
    return hasattr(x, "shape") and hasattr(x, "dtype")


def hungarian_scores(
    pred: Any,
    gt: Any,
    num_classes: int,
    ignore_index: int = IGNORE_LABEL,
    *,
    num_clusters: int | None = None,
    class_names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Unsupervised segmentation scores of cluster maps against class maps (one-to-one Hungarian).

    ``pred`` and ``gt`` are either two arrays/tensors of the same shape (any number of images stacked)
    or two equally long iterables of per-image maps, consumed one pair at a time so a whole dataset
    streams in bounded memory. K is ``num_clusters`` or inferred as ``max(pred) + 1``.
    Returns the dict of :func:`scores_from_confusion` (``miou``, ``pixel_accuracy`` as fractions,
    ``per_class_iou``, ``matching``, ``confusion``, ``many_to_one``, ``counts``, ...).
    """
    acc = ConfusionAccumulator(num_classes, num_clusters=num_clusters, ignore_index=ignore_index)
    if _is_single_map(pred) and _is_single_map(gt):
        acc.update(pred, gt)
    else:
        pairs: Iterable = zip(pred, gt, strict=True)
        for p, g in pairs:
            acc.update(p, g)
    return acc.scores(class_names=class_names)
