"""The SlotCon module: student, teacher, centre (docs/method.md §1–5).

Attribute names mirror the public release (``encoder_q``/``encoder_k``, ``projector_q``/``projector_k``,
``grouping_q``/``grouping_k``, ``predictor_slot``, ``center``) so its state dicts load by name.

Unlike the release, the teacher EMA and the centre update are explicit steps::

    model.momentum_update(m)                   # docs/method.md §5: start of the step, before the teacher runs
    out = model(crops, coords, flags)           # dict: loss, loss_group, loss_slot, center_batch, ...
    out["loss"].backward()
    model.update_center(out["center_batch"])   # docs/method.md §4: c ← 0.9·c + 0.1·batch mean
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields

import torch
from torch import nn

from core.encoder import ResNetTrunk
from core.heads import DenseProjector, SemanticGrouping, SlotPredictor
from core.invaug import inverse_augment
from core.losses import batch_center, group_loss, presence_mask, slot_contrastive_loss


@dataclass
class SlotConConfig:
    """Architecture and loss hyper-parameters of a SlotCon model (defaults: the COCO release)."""

    arch: str = "resnet50"
    width: float = 1.0  # channel multiplier of the ResNet (option; the release uses 1.0)
    stride16: bool = False  # last stage at stride 1 → stride-16 map (option; the release uses 32)
    dim_hidden: int = 4096
    dim_out: int = 256
    num_prototypes: int = 256
    teacher_temp: float = 0.07
    student_temp: float = 0.1
    center_momentum: float = 0.9
    group_loss_weight: float = 0.5
    slot_temp: float = 0.2

    @classmethod
    def from_dict(cls, d: dict) -> SlotConConfig:
        """Build from a dict, ignoring unknown keys (e.g. a training config's extra fields)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def to_dict(self) -> dict:
        """Plain-dict form stored inside checkpoints."""
        return asdict(self)


def _teacher_copy(module: nn.Module) -> nn.Module:
    teacher = copy.deepcopy(module)
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


class SlotCon(nn.Module):
    """Student (θ) and EMA teacher (ξ) with semantic grouping; ``forward`` returns the loss terms."""

    def __init__(self, config: SlotConConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or SlotConConfig()
        self.encoder_q = ResNetTrunk(cfg.arch, width=cfg.width, stride16=cfg.stride16)
        self.projector_q = DenseProjector(self.encoder_q.num_channels, cfg.dim_hidden, cfg.dim_out)
        self.grouping_q = SemanticGrouping(cfg.num_prototypes, cfg.dim_out, cfg.teacher_temp)
        self.predictor_slot = SlotPredictor(cfg.dim_out, cfg.dim_hidden)
        self.encoder_k = _teacher_copy(self.encoder_q)
        self.projector_k = _teacher_copy(self.projector_q)
        self.grouping_k = _teacher_copy(self.grouping_q)
        self.register_buffer("center", torch.zeros(1, cfg.num_prototypes))

    # -- teacher -----------------------------------------------------------------------------
    def student_teacher_pairs(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Parameters covered by the EMA: (student list, teacher list), encoder+projector+prototypes."""
        pairs = [(self.encoder_q, self.encoder_k), (self.projector_q, self.projector_k),
                 (self.grouping_q, self.grouping_k)]  # fmt: skip
        qs = [p for q, _ in pairs for p in q.parameters()]
        ks = [p for _, k in pairs for p in k.parameters()]
        return qs, ks

    @torch.no_grad()
    def momentum_update(self, momentum: float) -> None:
        """ξ ← m·ξ + (1−m)·θ for encoder, projector and prototypes (BN buffers are not averaged)."""
        qs, ks = self.student_teacher_pairs()
        torch._foreach_mul_(ks, momentum)
        torch._foreach_add_(ks, qs, alpha=1.0 - momentum)

    @torch.no_grad()
    def update_center(self, center_batch: torch.Tensor) -> None:
        """c ← μ·c + (1−μ)·center_batch, with center_batch (1, K) from ``forward``."""
        mu = self.config.center_momentum
        self.center.mul_(mu).add_(center_batch.to(self.center.dtype), alpha=1.0 - mu)

    def teacher_project(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) → teacher projections z (B, D, h, w), unnormalised."""
        return self.projector_k(self.encoder_k(images))

    # -- training forward ---------------------------------------------------------------------
    def forward(
        self,
        crops: Sequence[torch.Tensor],
        coords: Sequence[torch.Tensor],
        flags: Sequence[torch.Tensor],
    ) -> dict[str, torch.Tensor]:
        """Loss of one batch of two views.

        crops: 2 × (B, 3, S, S); coords: 2 × (B, 4) overlap boxes; flags: 2 × (B,) bool.
        Returns ``loss`` = λ·Group + (1−λ)·Slot (differentiable), the detached terms ``loss_group``
        and ``loss_slot`` (each the sum of its two symmetric terms), ``center_batch`` (1, K) for
        :meth:`update_center`, and for logging ``active_slots`` (mean prototypes present per image
        in the teacher's views: per training crop, as the paper's Fig. 4 counts them), ``batch_dead``
        (prototypes present in no teacher view) and ``positive_pairs`` (mean per image and direction of the
        slots present in the student's view a and the teacher's view b: the positive pairs of Eq. 6, the
        paper's 3.6 on a converged COCO model, App. D).
        """
        cfg = self.config
        x1 = self.projector_q(self.encoder_q(crops[0]))  # (B, D, h, w)
        x2 = self.projector_q(self.encoder_q(crops[1]))
        with torch.no_grad():
            y1 = self.teacher_project(crops[0])
            y2 = self.teacher_project(crops[1])

        q1, sq1 = self.grouping_q(x1)  # (B, K, D), (B, K, h, w)
        q2, sq2 = self.grouping_q(x2)
        sq1_al = inverse_augment(sq1, coords[0], flags[0])
        sq2_al = inverse_augment(sq2, coords[1], flags[1])
        with torch.no_grad():
            k1, sk1 = self.grouping_k(y1)
            k2, sk2 = self.grouping_k(y2)
            sk1_al = inverse_augment(sk1, coords[0], flags[0])
            sk2_al = inverse_augment(sk2, coords[1], flags[1])

        ts, tt = cfg.student_temp, cfg.teacher_temp
        c = self.center
        loss_group = group_loss(sq1_al, sk2_al, c, ts, tt) + group_loss(sq2_al, sk1_al, c, ts, tt)
        pred, tau = self.predictor_slot, cfg.slot_temp
        loss_slot = slot_contrastive_loss(q1, k2, sq1, sk2, pred, tau) + slot_contrastive_loss(
            q2, k1, sq2, sk1, pred, tau
        )
        lam = cfg.group_loss_weight
        loss = lam * loss_group + (1.0 - lam) * loss_slot

        with torch.no_grad():
            present1, present2 = presence_mask(sk1), presence_mask(sk2)  # (B, K) teacher views
            present = present1 | present2
            # Eq. 6's positive pairs: slots present in the student's view a and the teacher's view b
            pairs = (presence_mask(sq1) & present2).sum(1) + (presence_mask(sq2) & present1).sum(1)  # (B,)
            stats = {
                "center_batch": batch_center(sk1, sk2),
                "active_slots": present1.sum(1).float().mean(),
                "batch_dead": (~present.any(0)).sum().float(),
                "positive_pairs": pairs.float().mean() / 2,
            }
        return {"loss": loss, "loss_group": loss_group.detach(), "loss_slot": loss_slot.detach(), **stats}
