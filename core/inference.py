"""Teacher-only inference (SPEC §7): prototype scores, assignments, segments and pooled vectors."""

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
    model = getattr(model, "module", model)
    if hasattr(model, "infer_outputs"):
        return model.infer_outputs(images)
    with _eval_mode(model):
        z = model.teacher_project(images)  # (B, D, h, w)
        scores = prototype_cosines(z, model.grouping_k.slot_embed.weight)  # (B, K, h, w)
    return F.normalize(z.float(), dim=1), scores.float()


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
    ``ŝ_k · mean(ẑ)`` (SPEC §7: the mean of the pixels' cosines to the prototype; the mean is *not*
    re-normalised, so a segment whose pixels disagree scores lower); areas (S,) pixel counts.
    """

    prototypes: torch.Tensor
    vectors: torch.Tensor
    scores: torch.Tensor
    areas: torch.Tensor


def image_segments(z_norm: torch.Tensor, labels: torch.Tensor, prototypes: torch.Tensor) -> Segments:
    """Pool one image's normalised projections per assigned prototype.

    z_norm: (D, h, w) normalised projections; labels: (h, w) prototype ids; prototypes: (K, D) table.
    Returns :class:`Segments` with one row per distinct prototype in ``labels``; ``scores`` rank a
    prototype's segments as the release's ``viz_slots.py`` does (``prepare_knn``).
    """
    d = z_norm.shape[0]
    flat = labels.flatten()  # (hw,)
    ids, inverse, counts = torch.unique(flat, return_inverse=True, return_counts=True)
    sums = torch.zeros(len(ids), d, dtype=z_norm.dtype, device=z_norm.device)
    sums.index_add_(0, inverse, z_norm.flatten(1).t())  # (S, D)
    means = sums / counts.unsqueeze(1).to(sums.dtype)  # (S, D), norm <= 1
    protos = F.normalize(prototypes.to(means.dtype), dim=1)[ids]  # (S, D)
    return Segments(ids, F.normalize(means, dim=1), (means * protos).sum(1), counts)


def active_prototypes(scores: torch.Tensor) -> torch.Tensor:
    """(B, K, h, w) scores → (B, K) bool: prototype is the argmax at one or more pixels (SPEC §7)."""
    return presence_mask(scores)
