"""Inverse augmentation (SPEC §3): bring each view's assignment map back to the views' overlap.

A view's ``coords`` are the intersection box of the two crops in that view's own normalised
coordinates (x1, y1, x2, y2 in [0, 1]), already mirrored when the view was flipped. RoIAlign resamples
the box to the full map size, then flipped views are flipped back, so that pixel (h, w) of both
aligned maps looks at the same image location.
"""

from __future__ import annotations

import torch
from torchvision.ops import roi_align


def inverse_augment(x: torch.Tensor, coords: torch.Tensor, flags: torch.Tensor) -> torch.Tensor:
    """Align maps to the crops' overlap and undo horizontal flips.

    x: (B, K, H, W) maps (``dots``); coords: (B, 4) normalised boxes (x1, y1, x2, y2);
    flags: (B,) bool, True where the view was flipped. Returns (B, K, H, W).
    Vectorised: no per-sample Python loop and no host synchronisation.
    """
    b, _, h, w = x.shape
    scale = torch.tensor([w, h, w, h], dtype=x.dtype, device=x.device)
    idx = torch.arange(b, dtype=x.dtype, device=x.device).unsqueeze(1)
    boxes = torch.cat([idx, coords.to(device=x.device, dtype=x.dtype) * scale], dim=1)  # (B, 5)
    aligned = roi_align(x, boxes, output_size=(h, w), spatial_scale=1.0, sampling_ratio=-1, aligned=True)
    flags = torch.as_tensor(flags, device=x.device).bool().view(b, 1, 1, 1)
    return torch.where(flags, aligned.flip(-1), aligned)
