"""Inverse augmentation (docs/method.md §3): bring each view's assignment map back to the views' overlap.

A view's ``coords`` are the intersection box of the two crops in that view's own normalised
coordinates (x1, y1, x2, y2 in [0, 1]), already mirrored when the view was flipped. RoIAlign resamples
the box to the full map size, then flipped views are flipped back, so that pixel (h, w) of both
aligned maps looks at the same image location.
"""

from __future__ import annotations

import torch
from torchvision.ops import roi_align

#: RoIAlign runs in this dtype whatever the maps' dtype: its boxes carry the batch index as a number, and
#: bf16 (8 significant bits) cannot hold odd integers above 256 nor fp16 integers above 2048, so a half
#: precision box would align a sample from its neighbour's map. float32 holds every index up to 2**24.
ALIGN_DTYPE = torch.float32


def inverse_augment(x: torch.Tensor, coords: torch.Tensor, flags: torch.Tensor) -> torch.Tensor:
    """Align maps to the crops' overlap and undo horizontal flips.

    x: (B, K, H, W) maps (``dots``); coords: (B, 4) normalised boxes (x1, y1, x2, y2);
    flags: (B,) bool, True where the view was flipped. Returns (B, K, H, W) in ``x``'s dtype.
    The boxes and the resampling are float32 (:data:`ALIGN_DTYPE`) under any autocast, as torchvision's
    autocast rule for RoIAlign computes it anyway. Vectorised: no per-sample loop, no host synchronisation.
    """
    b, _, h, w = x.shape
    scale = torch.tensor([w, h, w, h], dtype=ALIGN_DTYPE, device=x.device)
    idx = torch.arange(b, dtype=ALIGN_DTYPE, device=x.device).unsqueeze(1)  # (B, 1)
    boxes = torch.cat([idx, coords.to(device=x.device, dtype=ALIGN_DTYPE) * scale], dim=1)  # (B, 5)
    with torch.autocast(x.device.type, enabled=False):
        aligned = roi_align(
            x.to(ALIGN_DTYPE), boxes, output_size=(h, w), spatial_scale=1.0, sampling_ratio=-1, aligned=True
        )
    flags = torch.as_tensor(flags, device=x.device).bool().view(b, 1, 1, 1)
    return torch.where(flags, aligned.flip(-1), aligned).to(x.dtype)
