"""One image's segments (SPEC §7): pixels sharing a prototype at feature resolution, their pooled
vectors and scores (``core.inference.image_segments``), and their masks at image resolution as COCO RLE.

Masks: the teacher scores of the image's segment prototypes are bilinearly resized to the model's
input crop (224²), argmaxed (SPEC §7), then nearest-resized onto the centre-crop box *in original image
pixels*; so the masks of an image partition its crop box (pixels outside it belong to no segment),
every segment has a non-empty mask, and RLE sizes equal the image's (height, width).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from pycocotools import mask as mask_utils

from core.inference import image_segments


def crop_box(width: int, height: int, resize: int, crop: int) -> tuple[int, int, int, int]:
    """The centre-crop region of ``eval_transform(resize, crop)`` in original pixels: (x, y, w, h).

    Mirrors torchvision: the shorter side becomes ``resize`` (longer side truncated), then a
    ``crop``×``crop`` centre crop at offset ``round((side - crop) / 2)``.
    """
    short, long = (width, height) if width <= height else (height, width)
    new_long = int(resize * long / short)
    new_w, new_h = (resize, new_long) if width <= height else (new_long, resize)
    top, left = int(round((new_h - crop) / 2.0)), int(round((new_w - crop) / 2.0))
    sx, sy = width / new_w, height / new_h
    x0, y0 = int(round(left * sx)), int(round(top * sy))
    x1, y1 = min(width, int(round((left + crop) * sx))), min(height, int(round((top + crop) * sy)))
    return x0, y0, max(1, x1 - x0), max(1, y1 - y0)


@dataclass
class ImageSegmentation:
    """Segments of one image, S rows sorted by prototype.

    prototypes (S,) int64; vectors (S, D) float32 L2-normalised; scores (S,) float32 cosine to the
    prototype; feature_areas (S,) feature pixels; areas (S,) mask pixels at image resolution;
    bboxes (S, 4) [x, y, w, h]; rles: S COCO RLE count strings of size (height, width);
    label_counts (S, C) labelled pixels per class inside each mask (None without labels).
    """

    prototypes: np.ndarray
    vectors: np.ndarray
    scores: np.ndarray
    feature_areas: np.ndarray
    areas: np.ndarray
    bboxes: np.ndarray
    rles: list[str]
    label_counts: np.ndarray | None = None


def _argmax_channels(x: np.ndarray) -> np.ndarray:
    """argmax over axis 0 of (S, H, W) as S vectorised passes (faster than a strided reduction for small S);
    ties go to the lower index, as with ``argmax``."""
    best = x[0].copy()
    idx = np.zeros(x.shape[1:], dtype=np.int64)
    for s in range(1, len(x)):
        better = x[s] > best
        best[better] = x[s][better]
        idx[better] = s
    return idx


def box_assignment(
    scores: torch.Tensor, present: torch.Tensor, box_hw: tuple[int, int], crop: int | None = None
) -> np.ndarray:
    """(bh, bw) int64 indices into ``present`` (S prototype ids) over the crop box.

    scores: (K, h, w). The present prototypes' scores are bilinearly resized to ``crop``×``crop`` (the
    model input; default: the box itself), argmaxed, and nearest-resized to the box. A prototype that
    wins no pixel after resizing (rare) gets the pixel at the centre of its first feature cell, so every
    segment keeps a non-empty mask.
    """
    bh, bw = box_hw
    ch, cw = (crop, crop) if crop else (bh, bw)
    sub = scores[present].unsqueeze(0)  # (1, S, h, w)
    up = F.interpolate(sub, size=(ch, cw), mode="bilinear", align_corners=False)[0]  # (S, ch, cw)
    local = _argmax_channels(up.numpy())
    if (ch, cw) != (bh, bw):
        rows = np.minimum((np.arange(bh) + 0.5) * ch / bh, ch - 1).astype(np.int64)
        cols = np.minimum((np.arange(bw) + 0.5) * cw / bw, cw - 1).astype(np.int64)
        local = local[rows][:, cols]
    h, w = scores.shape[-2:]
    feat = scores.argmax(0).numpy()
    seen = np.bincount(local.ravel(), minlength=len(present))
    for s in np.flatnonzero(seen == 0):
        iy, ix = np.argwhere(feat == int(present[s]))[0]
        local[min(bh - 1, int((iy + 0.5) * bh / h)), min(bw - 1, int((ix + 0.5) * bw / w))] = s
    return local


def segment_image(
    z_norm: torch.Tensor,
    scores: torch.Tensor,
    prototypes: torch.Tensor,
    image_size: tuple[int, int],
    box: tuple[int, int, int, int],
    label: np.ndarray | None = None,
    num_classes: int = 0,
    crop: int | None = None,
) -> ImageSegmentation:
    """Segments of one image from its teacher outputs.

    z_norm: (D, h, w) normalised projections; scores: (K, h, w) cosines; prototypes: (K, D);
    image_size: (width, height) of the original image; box: its crop region (x, y, w, h);
    label: optional (height, width) class map (255 = ignore) for per-segment class counts;
    crop: the model's input size, where scores are resized before argmax (default: the box size).
    Returns an :class:`ImageSegmentation`.
    """
    feat_labels = scores.argmax(0)  # (h, w)
    seg = image_segments(z_norm, feat_labels, prototypes)
    present = seg.prototypes
    width, height = image_size
    x0, y0, bw, bh = box
    local = box_assignment(scores, present, (bh, bw), crop)
    s = len(present)
    masks = np.zeros((height, width, s), dtype=np.uint8, order="F")
    masks[y0 : y0 + bh, x0 : x0 + bw] = local[..., None] == np.arange(s)
    encoded = mask_utils.encode(masks)
    areas = mask_utils.area(encoded).astype(np.int64)
    bboxes = mask_utils.toBbox(encoded).round().astype(np.int64)
    rles = [e["counts"].decode("ascii") for e in encoded]
    label_counts = None
    if label is not None and num_classes > 0:
        lab = label[y0 : y0 + bh, x0 : x0 + bw].astype(np.int64).ravel()
        ok = lab < num_classes
        flat = local.ravel()[ok] * num_classes + lab[ok]
        label_counts = np.bincount(flat, minlength=s * num_classes).reshape(s, num_classes)
    return ImageSegmentation(
        prototypes=present.numpy().astype(np.int64),
        vectors=seg.vectors.numpy().astype(np.float32),
        scores=seg.scores.numpy().astype(np.float32),
        feature_areas=seg.areas.numpy().astype(np.int64),
        areas=areas,
        bboxes=bboxes,
        rles=rles,
        label_counts=label_counts,
    )
