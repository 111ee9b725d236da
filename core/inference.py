"""Teacher-only inference (docs/method.md §7): prototype scores, assignments, segments and pooled vectors."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from core.heads import prototype_cosines
from core.losses import presence_mask


@contextmanager
def _eval_mode(model: nn.Module):
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


@torch.no_grad()
def teacher_outputs(model: nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher forward in eval mode: (B, 3, H, W) → (z_normalised (B, D, h, w), scores (B, K, h, w)).

    ``scores`` are the raw cosines between pixel projections and the teacher prototypes. A model with its
    own ``infer_outputs`` (``core.infer_model.InferenceModel``) computes them itself.
    """
    z, scores, _ = teacher_outputs_with_features(model, images, features=False)
    return z, scores


@torch.no_grad()
def teacher_outputs_with_features(
    model: nn.Module, images: torch.Tensor, features: bool = True
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """:func:`teacher_outputs` and the teacher encoder's feature map that the projector maps to z:
    ``(z_norm (B, D, h, w), scores (B, K, h, w), features (B, C, h, w) fp32, or None when not asked)``.

    The features are the backbone's output (after its last ReLU), the "pre-projector" space: pooled per
    segment they are the second embedding for neighbour search (``indexer.segments``).
    """
    model = getattr(model, "module", model)
    if hasattr(model, "infer_outputs"):
        if not features:
            return (*model.infer_outputs(images), None)
        return model.infer_outputs(images, features=True)
    with _eval_mode(model):
        feats = model.encoder_k(images)  # (B, C, h, w)
        z = model.projector_k(feats)  # (B, D, h, w): model.teacher_project, split to keep the features
        scores = prototype_cosines(z, model.grouping_k.slot_embed.weight)  # (B, K, h, w)
    return F.normalize(z.float(), dim=1), scores.float(), feats.float() if features else None


@torch.no_grad()
def prototype_scores(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Teacher cosine scores of every prototype at every feature pixel: (B, 3, H, W) → (B, K, h, w)."""
    return teacher_outputs(model, images)[1]


def assign(scores: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
    """Per-pixel prototype: bilinearly resize the scores (not the labels) to ``size``, then argmax.

    scores: (B, K, h, w). Returns (B, H, W) int64 (``size=None`` keeps h×w).
    """
    if size is not None and tuple(scores.shape[-2:]) != tuple(size):
        scores = F.interpolate(scores, size=size, mode="bilinear", align_corners=False)
    return scores.argmax(dim=1)


@dataclass
class Segments:
    """The segments of one image: pixels sharing a prototype at feature resolution.

    prototypes (S,) int64 sorted ascending; vectors (S, D) L2-normalised means of the segment's
    normalised projections (the embedding for similarity search); scores (S,) the release's concept score
    ``ŝ_k · mean(ẑ)`` (docs/method.md §7: the mean of the pixels' cosines to the prototype; the mean is *not*
    re-normalised, so a segment whose pixels disagree scores lower); areas (S,) pixel counts.
    """

    prototypes: torch.Tensor
    vectors: torch.Tensor
    scores: torch.Tensor
    areas: torch.Tensor


def _segment_means(x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(C, h, w) map pooled over each distinct id of ``labels`` (h, w): (ids (S,), means (S, C), counts (S,))."""
    ids, inverse, counts = torch.unique(labels.flatten(), return_inverse=True, return_counts=True)
    sums = torch.zeros(len(ids), x.shape[0], dtype=x.dtype, device=x.device)
    sums.index_add_(0, inverse, x.flatten(1).t())  # (S, C)
    return ids, sums / counts.unsqueeze(1).to(sums.dtype), counts


def image_segments(z_norm: torch.Tensor, labels: torch.Tensor, prototypes: torch.Tensor) -> Segments:
    """Pool one image's normalised projections per assigned prototype.

    z_norm: (D, h, w) normalised projections; labels: (h, w) prototype ids; prototypes: (K, D) table.
    Returns :class:`Segments` with one row per distinct prototype in ``labels``; ``scores`` rank a
    prototype's segments as the release's ``viz_slots.py`` does (``prepare_knn``).
    """
    ids, means, counts = _segment_means(z_norm, labels)  # means: (S, D), norm <= 1
    protos = F.normalize(prototypes.to(means.dtype), dim=1)[ids]  # (S, D)
    return Segments(ids, F.normalize(means, dim=1), (means * protos).sum(1), counts)


def segment_features(features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The encoder-space embedding of one image's segments: (S, C) L2-normalised means of the backbone's
    features (:func:`teacher_outputs_with_features`, (C, h, w)) over each segment's pixels, in the row order
    of :func:`image_segments` for the same ``labels`` (h, w) (prototype ids ascending).

    The mean is taken of the raw features (as global average pooling is), then normalised, so the cosine of
    two segments compares their pooled backbone representations.
    """
    return F.normalize(_segment_means(features, labels)[1], dim=1)


def active_prototypes(scores: torch.Tensor) -> torch.Tensor:
    """(B, K, h, w) scores → (B, K) bool: prototype is the argmax at one or more pixels (docs/method.md §7)."""
    return presence_mask(scores)
