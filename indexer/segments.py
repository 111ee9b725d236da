"""One image's segments (docs/method.md §7), the one path from a PIL image to segments used by the indexer and by
uploads (``server.services.slots``): :func:`model_input` (preprocessing and the geometry of what the model
sees) → :func:`teacher_outputs` (batched) → :func:`segment_outputs` (segments, pooled vectors, scores, masks).
:func:`segment_images` chains the three for a list of images.

Two views of an image (:class:`ModelView`):

- **crop** (the release's protocol, the index's): shorter side resized to ``resize``, centre crop
  ``crop``²; the masks partition the crop box *in original image pixels* and pixels outside it belong to
  no segment.
- **whole** (``crop=None``, the default for uploads): shorter side resized to ``resize``, no crop (the
  ResNet is fully convolutional), so every pixel of the image is assigned.

Masks: the teacher scores of the image's segment prototypes are bilinearly resized to the model input,
argmaxed (docs/method.md §7), then nearest-resized onto the view's box in original pixels; every segment has a
non-empty mask, and RLE sizes equal the image's (height, width). Segments, vectors and scores come from
the argmax at feature resolution (``core.inference.image_segments``), as in the release's ``viz_slots.py``.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms as T
from PIL import Image
from pycocotools import mask as mask_utils

from core.augment import IMAGENET_MEAN, IMAGENET_STD, eval_transform
from core.inference import image_segments, segment_features, teacher_outputs_with_features
from core.recipes import INDEX_CROP, INDEX_RESIZE


def resized_size(width: int, height: int, resize: int) -> tuple[int, int]:
    """(width, height) after torchvision's ``Resize(resize)``: shorter side ``resize``, longer truncated."""
    if width <= height:
        return resize, int(resize * height / width)
    return int(resize * width / height), resize


def crop_box(width: int, height: int, resize: int, crop: int) -> tuple[int, int, int, int]:
    """The centre-crop region of ``eval_transform(resize, crop)`` in original pixels: (x, y, w, h).

    Mirrors torchvision: the shorter side becomes ``resize`` (longer side truncated), then a
    ``crop``×``crop`` centre crop at offset ``round((side - crop) / 2)``.
    """
    new_w, new_h = resized_size(width, height, resize)
    top, left = int(round((new_h - crop) / 2.0)), int(round((new_w - crop) / 2.0))
    sx, sy = width / new_w, height / new_h
    x0, y0 = int(round(left * sx)), int(round(top * sy))
    x1, y1 = min(width, int(round((left + crop) * sx))), min(height, int(round((top + crop) * sy)))
    return x0, y0, max(1, x1 - x0), max(1, y1 - y0)


@dataclass(frozen=True)
class ModelView:
    """What the model saw of an image: ``image_size`` (width, height) of the original; ``box``
    (x, y, w, h) the region of it that the model input covers (the centre crop, or the whole image);
    ``input_size`` (height, width) of the model input, where scores are resized before the argmax."""

    image_size: tuple[int, int]
    box: tuple[int, int, int, int]
    input_size: tuple[int, int]

    @property
    def whole(self) -> bool:
        """True when the box is the whole image (no crop)."""
        return self.box == (0, 0, *self.image_size)


def model_input(
    img: Image.Image, resize: int = INDEX_RESIZE, crop: int | None = INDEX_CROP
) -> tuple[torch.Tensor, ModelView]:
    """The model input of ``img`` and what it covers: ``((3, h, w) normalised tensor, ModelView)``.

    ``crop``: the release's centre crop (``eval_transform(resize, crop)``, h = w = crop); None: the whole
    image with its shorter side resized to ``resize`` (bilinear, as ``eval_transform``), no crop.
    """
    width, height = img.size
    if crop:
        box = crop_box(width, height, resize, crop)
        return eval_transform(resize, crop)(img), ModelView((width, height), box, (crop, crop))
    new_w, new_h = resized_size(width, height, resize)
    to_tensor = T.Compose([
        T.Resize(resize, interpolation=T.InterpolationMode.BILINEAR),
        T.ToTensor(),
        T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])  # fmt: skip
    return to_tensor(img), ModelView((width, height), (0, 0, width, height), (new_h, new_w))


@dataclass
class ImageSegmentation:
    """Segments of one image, S rows sorted by prototype.

    prototypes (S,) int64; vectors (S, D) float32 L2-normalised mean projections (the FAISS vector);
    scores (S,) float32 the release's concept score ŝ_k · mean(ẑ) (``core.inference.Segments``);
    feature_areas (S,) feature pixels; areas (S,) mask pixels at image resolution; bboxes (S, 4)
    [x, y, w, h]; rles: S COCO RLE count strings of size (height, width); label_counts (S, C) labelled
    pixels per class inside each mask (None without labels); view: what the model saw; box_labels
    (box h, box w) int64 prototype id of every pixel of ``view.box``; encoder_vectors (S, C) float32
    L2-normalised means of the teacher encoder's features over each segment (the pre-projector embedding,
    :func:`core.inference.segment_features`; None unless asked for).
    """

    prototypes: np.ndarray
    vectors: np.ndarray
    scores: np.ndarray
    feature_areas: np.ndarray
    areas: np.ndarray
    bboxes: np.ndarray
    rles: list[str]
    label_counts: np.ndarray | None = None
    view: ModelView | None = None
    box_labels: np.ndarray | None = None
    encoder_vectors: np.ndarray | None = None


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
    scores: torch.Tensor, present: torch.Tensor, box_hw: tuple[int, int], input_size: tuple[int, int] | None = None
) -> np.ndarray:
    """(bh, bw) int64 indices into ``present`` (S prototype ids) over the view's box.

    scores: (K, h, w). The present prototypes' scores are bilinearly resized to ``input_size`` (the
    model input (h, w); default: the box itself), argmaxed, and nearest-resized to the box. A prototype
    that wins no pixel after resizing (rare) gets the pixel at the centre of its first feature cell, so
    every segment keeps a non-empty mask.
    """
    bh, bw = box_hw
    ch, cw = input_size if input_size else (bh, bw)
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


def encode_label_map(local: np.ndarray, origin: tuple[int, int], size: tuple[int, int], n: int) -> list[dict]:
    """COCO RLEs (compressed, as ``pycocotools.mask.encode`` gives them) of the masks ``local == j`` for
    j < ``n``, with ``local`` (bh, bw) placed at ``origin`` (x0, y0) in an image of ``size`` (height, width)
    and nothing outside it.

    Equal to encoding the (height, width, n) stack of masks, without making it: the runs are read off the
    label map once, in the column-major order of COCO's RLE, and each segment's runs become its counts
    (several times faster than encoding the stack; docs/performance.md, Indexing).
    """
    height, width = size
    x0, y0 = origin
    bh, bw = local.shape
    labels = np.full((width, height), -1, dtype=np.int32)  # transposed: row-major ravel = column-major order
    labels[x0 : x0 + bw, y0 : y0 + bh] = local.T
    flat = labels.ravel()
    total = flat.size
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    starts = np.concatenate(([0], change))
    ends = np.concatenate((change, [total]))
    run_label = flat[starts]
    order = np.argsort(run_label, kind="stable")  # runs grouped by label, each group in pixel order
    bounds = np.searchsorted(run_label[order], np.arange(n + 1))
    out = []
    for j in range(n):
        idx = order[bounds[j] : bounds[j + 1]]
        st, en = starts[idx], ends[idx]
        if len(st) == 0:  # an empty mask: one run of zeros
            counts = np.array([total], dtype=np.int64)
        else:
            counts = np.empty(2 * len(st) + 1, dtype=np.int64)
            counts[0] = st[0]  # zeros first (0 when the mask starts at the first pixel)
            counts[1::2] = en - st  # ones
            counts[2:-1:2] = st[1:] - en[:-1]  # zeros between them
            counts[-1] = total - en[-1]
            counts = counts if counts[-1] else counts[:-1]  # no empty trailing run, as pycocotools writes none
        out.append(mask_utils.frPyObjects({"size": [height, width], "counts": counts.tolist()}, height, width))
    return out


def segment_outputs(
    z_norm: torch.Tensor,
    scores: torch.Tensor,
    prototypes: torch.Tensor,
    view: ModelView,
    label: np.ndarray | None = None,
    num_classes: int = 0,
    features: torch.Tensor | None = None,
) -> ImageSegmentation:
    """Segments of one image from its teacher outputs.

    z_norm: (D, h, w) normalised projections; scores: (K, h, w) cosines; prototypes: (K, D);
    view: what the model saw (:func:`model_input`); label: optional (height, width) class map in the
    image's frame (255 = ignore) for per-segment class counts; features: optional (C, h, w) encoder
    features, pooled into ``encoder_vectors``. Returns an :class:`ImageSegmentation`.
    """
    assignment = scores.argmax(0)  # argmax at feature resolution
    seg = image_segments(z_norm, assignment, prototypes)
    present = seg.prototypes
    width, height = view.image_size
    x0, y0, bw, bh = view.box
    local = box_assignment(scores, present, (bh, bw), view.input_size)
    s = len(present)
    encoded = encode_label_map(local, (x0, y0), (height, width), s)
    areas = mask_utils.area(encoded).astype(np.int64)
    bboxes = mask_utils.toBbox(encoded).round().astype(np.int64)
    rles = [e["counts"].decode("ascii") for e in encoded]
    label_counts = None
    if label is not None and num_classes > 0:
        lab = label[y0 : y0 + bh, x0 : x0 + bw].astype(np.int64).ravel()
        ok = lab < num_classes
        flat = local.ravel()[ok] * num_classes + lab[ok]
        label_counts = np.bincount(flat, minlength=s * num_classes).reshape(s, num_classes)
    protos = present.numpy().astype(np.int64)
    return ImageSegmentation(
        prototypes=protos,
        vectors=seg.vectors.numpy().astype(np.float32),
        scores=seg.scores.numpy().astype(np.float32),
        feature_areas=seg.areas.numpy().astype(np.int64),
        areas=areas,
        bboxes=bboxes,
        rles=rles,
        label_counts=label_counts,
        view=view,
        box_labels=protos[local],
        encoder_vectors=None if features is None else segment_features(features, assignment).numpy().astype(np.float32),
    )


def segment_batch(
    model: torch.nn.Module,
    tensors: Sequence[torch.Tensor],
    views: Sequence[ModelView],
    labels: Sequence[np.ndarray | None] | None = None,
    num_classes: int = 0,
    device: torch.device | str | None = None,
    encoder_vectors: bool = False,
) -> list[ImageSegmentation]:
    """Segments of several prepared images (:func:`model_input` outputs), one teacher pass per input size.

    tensors: (3, h_i, w_i) each; views: their :class:`ModelView`; labels: optional class maps;
    ``encoder_vectors``: also pool the encoder's features per segment. Returns one
    :class:`ImageSegmentation` per image, in order.
    """
    dev = torch.device(device) if device is not None else next(model.parameters()).device
    prototypes = model.grouping_k.slot_embed.weight.detach().float().cpu()  # (K, D)
    labels = list(labels) if labels is not None else [None] * len(tensors)
    out: list[ImageSegmentation | None] = [None] * len(tensors)
    by_size: dict[tuple[int, ...], list[int]] = {}
    for i, t in enumerate(tensors):
        by_size.setdefault(tuple(t.shape), []).append(i)
    for group in by_size.values():
        batch = torch.stack([tensors[i] for i in group]).to(dev)
        z, scores, feats = teacher_outputs_with_features(model, batch, features=encoder_vectors)
        z, scores = z.cpu(), scores.cpu()  # (B, D, h, w), (B, K, h, w)
        feats = feats.cpu() if feats is not None else None  # (B, C, h, w)
        for j, i in enumerate(group):
            f = feats[j] if feats is not None else None
            out[i] = segment_outputs(z[j], scores[j], prototypes, views[i], labels[i], num_classes, f)
    return out  # type: ignore[return-value]


def segment_images(
    model: torch.nn.Module,
    images: Sequence[Image.Image],
    resize: int = INDEX_RESIZE,
    crop: int | None = INDEX_CROP,
    device: torch.device | str | None = None,
    encoder_vectors: bool = False,
) -> list[ImageSegmentation]:
    """Segments of PIL images: :func:`model_input` → teacher → :func:`segment_outputs` (see the module doc).

    ``crop``: the release's centre crop (the index's protocol); None segments each whole image.
    ``encoder_vectors``: also pool the encoder's features per segment (as the index stores them).
    Returns one :class:`ImageSegmentation` per image.
    """
    prepared = [model_input(img, resize, crop) for img in images]
    return segment_batch(
        model, [t for t, _ in prepared], [v for _, v in prepared], device=device, encoder_vectors=encoder_vectors
    )


def decode_rle(rle: dict) -> np.ndarray:
    """COCO RLE as stored (``{"size": [h, w], "counts": str}``) → (h, w) bool mask."""
    counts = rle["counts"]
    obj = {"size": list(rle["size"]), "counts": counts.encode() if isinstance(counts, str) else counts}
    return mask_utils.decode(obj).astype(bool)


def label_map(segments: Sequence, height: int, width: int) -> np.ndarray:
    """(height, width) int32 map of prototype ids from one image's segments (records with ``rle`` and
    ``prototype``), -1 where no segment lies. An image's segments are disjoint (they tile its crop box)."""
    labels = np.full((height, width), -1, dtype=np.int32)
    for s in segments:
        labels[decode_rle(s.rle)] = s.prototype
    return labels


_GOLDEN = 0.618033988749895


@lru_cache(maxsize=8)
def palette(n: int = 256) -> np.ndarray:
    """The one palette of the project (overlays, legends, class maps): a fixed (max(n, 256), 3) uint8
    table; hues walk the golden ratio, saturation/value cycle.

    Deterministic, so prototype ``k`` has the same colour in every image and every session.
    """
    n = max(int(n), 256)
    i = np.arange(n, dtype=np.float64)
    h = (0.13 + i * _GOLDEN) % 1.0
    s = np.array([0.85, 0.6, 0.95, 0.7])[(i.astype(int) // 3) % 4]
    v = np.array([0.95, 0.75, 0.88, 0.62])[(i.astype(int) // 5) % 4]
    # HSV → RGB, vectorised (the standard sextant formula).
    sector = np.floor(h * 6.0)
    f = h * 6.0 - sector
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    sector = sector.astype(int) % 6
    choices = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)]
    rgb = np.stack([np.choose(sector, [c[ch] for c in choices]) for ch in range(3)], axis=1)
    return np.round(rgb * 255).astype(np.uint8)


def palette_png(ids: np.ndarray, colors: np.ndarray | None = None) -> bytes:
    """PNG bytes of an (H, W) map of ids below 256 as an 8-bit palette PNG: id j drawn in ``colors[j]`` (a
    (256, 3) uint8 table; default :func:`palette`)."""
    colors = palette(256) if colors is None else colors
    h, w = ids.shape
    img = Image.frombytes("P", (w, h), np.ascontiguousarray(ids, dtype=np.uint8).tobytes())
    img.putpalette(colors[:256].ravel().tolist())
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()
