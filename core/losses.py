"""SlotCon losses (docs/method.md §4) as pure tensor functions.

- :func:`group_loss`: pixel-level self-distillation of aligned assignment maps (Eq. 2–3).
- :func:`presence_mask`: which prototypes own at least one pixel of a view.
- :func:`slot_contrastive_loss`: InfoNCE between predicted student slots and teacher slots (Eq. 5–7).
- :func:`batch_center`: the mean teacher cosine used to update the centre.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from core.distributed import all_gather_cat, all_reduce_sum, get_rank, is_distributed
from core.syncbn import synchronises


def group_loss(
    student_dots: torch.Tensor,
    teacher_dots: torch.Tensor,
    center: torch.Tensor,
    student_temp: float = 0.1,
    teacher_temp: float = 0.07,
) -> torch.Tensor:
    """Cross-entropy between teacher and student assignment distributions, averaged over pixels.

    student_dots, teacher_dots: (B, K, H, W) aligned cosines (student of view a, teacher of view b);
    center: (1, K). Returns a scalar: mean over B·H·W of −Σ_k softmax((t−c)/τ_t) · log_softmax(s/τ_s).
    """
    s = student_dots.permute(0, 2, 3, 1).flatten(0, 2)  # (BHW, K)
    t = teacher_dots.permute(0, 2, 3, 1).flatten(0, 2)  # (BHW, K)
    log_p = F.log_softmax(s / student_temp, dim=-1)
    q = F.softmax((t - center) / teacher_temp, dim=-1)
    return torch.sum(-q * log_p, dim=-1).mean()


def presence_mask(dots: torch.Tensor) -> torch.Tensor:
    """(B, K, H, W) cosines → (B, K) bool: prototype k is the argmax at ≥ 1 pixel of image b."""
    b, k = dots.shape[:2]
    winners = dots.argmax(dim=1).flatten(1)  # (B, HW)
    present = torch.zeros(b, k, dtype=torch.bool, device=dots.device)
    return present.scatter_(1, winners, True)


def _zero_through(predictor: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor | float:
    """A zero that depends on every parameter of ``predictor`` (0.0 when it has none): a loss built on it
    gives each parameter a (zero) gradient, so DDP reduces the same buckets on every rank."""
    params = list(predictor.parameters()) if isinstance(predictor, nn.Module) else []
    return torch.stack([p.sum() for p in params]).sum() * 0.0 if params else 0.0


def _synchronises(predictor: Callable[[torch.Tensor], torch.Tensor]) -> bool:
    """True when ``predictor`` holds SyncBatchNorm layers that gather statistics from every rank."""
    return is_distributed() and isinstance(predictor, nn.Module) and any(synchronises(m) for m in predictor.modules())


def slot_contrastive_loss(
    student_slots: torch.Tensor,
    teacher_slots: torch.Tensor,
    student_dots: torch.Tensor,
    teacher_dots: torch.Tensor,
    predictor: Callable[[torch.Tensor], torch.Tensor],
    tau: float = 0.2,
) -> torch.Tensor:
    """Slot-level InfoNCE with presence masks, gathered across ranks (Eq. 5–7).

    student_slots: (B, K, D) from view a; teacher_slots: (B, K, D) from view b;
    student_dots / teacher_dots: the same views' *unaligned* (B, K, H, W) cosines.
    Queries are student slots present in the student's view a and the teacher's view b, passed through
    ``predictor`` and normalised; keys are normalised teacher slots present in view b from every rank.
    The positive of query (i, k) is key (i, k). Returns the scalar CE(q·kᵀ/τ) · 2τ.

    With too few queries (possible only with collapsed or very few prototypes) the release fails: the
    cross-entropy over zero rows is NaN and the predictor's BatchNorm1d raises on one row in training. Here
    the loss is then zero, and it stays safe under DDP: the zero depends on every predictor parameter (each
    gets a gradient, so DDP reduces the same buckets on every rank), and the query counts travel with the
    key masks (no extra collective), so every rank knows them. A predictor with SyncBatchNorm (multi-rank
    training) runs on every rank, on an empty input where a rank has no query (it still joins the statistics'
    collectives, with zero count), unless the whole world has fewer than two queries, when no rank runs it; a
    predictor with per-rank BatchNorm runs where its rank has two queries or more.

    A rank without queries builds its zero from the empty predictor's output alone: its backward then walks
    the predictor's graph as the other ranks do, so each parameter's gradient becomes ready (DDP launches its
    bucket) and SyncBatchNorm's backward all-reduce is issued in the same order on every rank. A second
    gradient path straight to the parameters would let a bucket become ready before that all-reduce on this
    rank only: the ranks would pair different collectives.
    """
    b, k, d = student_slots.shape
    n_local = b * k
    mask_q = presence_mask(student_dots.detach()).flatten()  # (BK,)
    mask_k = presence_mask(teacher_dots.detach()).flatten()  # (BK,)
    idx_q = (mask_q & mask_k).nonzero().squeeze(-1)  # (Nq,)

    keys = F.normalize(teacher_slots.reshape(n_local, d), dim=1)  # (BK, D)
    count = torch.tensor([idx_q.numel()], dtype=torch.long, device=mask_k.device)
    gathered = all_gather_cat(torch.cat([mask_k.to(torch.long), count])).view(-1, n_local + 1)  # (world, BK+1)
    mask_k_all = gathered[:, :n_local].flatten()  # (world·BK,)
    total_queries = int(gathered[:, n_local].sum())
    keys_all = all_gather_cat(keys)[mask_k_all.bool()]  # (Nk, D)

    zero = student_slots.sum() * 0.0
    if _synchronises(predictor):
        if total_queries < 2:
            return zero + _zero_through(predictor)
        predicted = predictor(student_slots.reshape(n_local, d)[idx_q])  # (Nq, D), Nq may be 0 here
        if idx_q.numel() == 0:
            return zero + predicted.sum() * 0.0  # the predictor's own graph only (see above)
    else:
        if idx_q.numel() < 2:
            return zero + _zero_through(predictor)
        predicted = predictor(student_slots.reshape(n_local, d)[idx_q])  # (Nq, D)
    queries = F.normalize(predicted, dim=1)  # (Nq, D)
    logits = queries @ keys_all.t() / tau  # (Nq, Nk)
    labels = mask_k_all.cumsum(0)[idx_q + n_local * get_rank()] - 1  # (Nq,)
    return F.cross_entropy(logits, labels) * (2 * tau)


@torch.no_grad()
def batch_center(*teacher_dots: torch.Tensor) -> torch.Tensor:
    """Mean teacher cosine per prototype over every pixel of the given views and of all ranks.

    teacher_dots: one or more (B, K, H, W) unaligned cosines. Returns (1, K).
    """
    total = torch.stack([t.float().sum(dim=(0, 2, 3)) for t in teacher_dots]).sum(0)  # (K,)
    count = torch.tensor([float(sum(t.shape[0] * t.shape[2] * t.shape[3] for t in teacher_dots))], device=total.device)
    packed = all_reduce_sum(torch.cat([total, count]))
    return (packed[:-1] / packed[-1]).unsqueeze(0)
