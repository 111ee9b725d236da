"""Projector g, slot predictor q and the semantic grouping module (docs/method.md §1–2).

Module layouts match the public release so that its state-dict keys load by name:
``mlp.{0,1,3,4,6}`` are (Conv|Linear, BN, -, Conv|Linear, BN, -, Conv|Linear); GELUs hold no weights.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _mlp(linear: type[nn.Module], norm: type[nn.Module], in_dim: int, hidden_dim: int, out_dim: int) -> nn.Sequential:
    kw = {"kernel_size": 1} if linear is nn.Conv2d else {}
    return nn.Sequential(
        linear(in_dim, hidden_dim, **kw),
        norm(hidden_dim),
        nn.GELU(),
        linear(hidden_dim, hidden_dim, **kw),
        norm(hidden_dim),
        nn.GELU(),
        linear(hidden_dim, out_dim, **kw),
    )


def _trunc_normal_init(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d | nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class DenseProjector(nn.Module):
    """Dense projector g: 1×1 conv MLP, (B, C, H, W) → (B, D, H, W). Truncated-normal(0.02) init."""

    def __init__(self, in_dim: int, hidden_dim: int = 4096, out_dim: int = 256) -> None:
        super().__init__()
        self.mlp = _mlp(nn.Conv2d, nn.BatchNorm2d, in_dim, hidden_dim, out_dim)
        _trunc_normal_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) → (B, D, H, W) projections."""
        return self.mlp(x)


class SlotPredictor(nn.Module):
    """Slot predictor q (student only): Linear MLP with BN1d, (N, D) → (N, D)."""

    def __init__(self, dim: int = 256, hidden_dim: int = 4096) -> None:
        super().__init__()
        self.mlp = _mlp(nn.Linear, nn.BatchNorm1d, dim, hidden_dim, dim)
        _trunc_normal_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, D) slots → (N, D) predictions."""
        return self.mlp(x)


def prototype_cosines(z: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
    """Cosine of every pixel projection with every prototype (docs/method.md §2 ``dots``).

    z: (B, D, H, W) projections; prototypes: (K, D). Returns (B, K, H, W).
    """
    return torch.einsum("kd,bdhw->bkhw", F.normalize(prototypes, dim=1), F.normalize(z, dim=1))


class SemanticGrouping(nn.Module):
    """Soft assignment of pixels to K learnable prototypes and attention-pooled slots (Eq. 1, 4).

    ``forward(z)`` returns ``(slots, dots)``: slots (B, K, D) are the attention-weighted means of the
    *unnormalised* projections; dots (B, K, H, W) are raw cosines (no temperature).
    """

    def __init__(self, num_prototypes: int, dim: int, temp: float = 0.07, eps: float = 1e-6) -> None:
        super().__init__()
        self.num_prototypes, self.dim, self.temp, self.eps = num_prototypes, dim, temp, eps
        self.slot_embed = nn.Embedding(num_prototypes, dim)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z: (B, D, H, W) → slots (B, K, D), dots (B, K, H, W)."""
        dots = prototype_cosines(z, self.slot_embed.weight)  # (B, K, H, W)
        attn = (dots / self.temp).softmax(dim=1) + self.eps  # (B, K, H, W)
        attn = attn / attn.sum(dim=(2, 3), keepdim=True)
        slots = torch.einsum("bdhw,bkhw->bkd", z, attn)  # (B, K, D)
        return slots, dots
