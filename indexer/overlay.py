"""Mask drawing shared by the concept figures (:mod:`indexer.figure`) and the server's renders
(``server.services.render`` imports these): one definition of the paper's Figure 3 red, so a figure and
the Concepts page tint a segment the same way.

Pixels are drawn with ``torchvision.utils.draw_segmentation_masks``; nothing loops over pixels.
"""

from __future__ import annotations

import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torchvision.utils import draw_segmentation_masks

#: Figure 3 of the paper: the concept's pixels tinted red, the rest of the image left visible.
FIGURE3_COLOR = (230, 25, 25)
FIGURE3_ALPHA = 0.5


def to_tensor(img: Image.Image) -> torch.Tensor:
    """(3, H, W) uint8 tensor of the image in RGB."""
    return TF.pil_to_tensor(img.convert("RGB"))


def fit_masks(masks: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(N, h, w) bool → (N, H, W) bool by nearest-neighbour resizing (no-op when sizes match)."""
    if tuple(masks.shape[-2:]) == tuple(size):
        return masks
    resized = torch.nn.functional.interpolate(masks[None].float(), size=size, mode="nearest")
    return resized[0] > 0.5


def overlay_mask(
    img: Image.Image,
    mask: np.ndarray,
    color: tuple[int, int, int] = FIGURE3_COLOR,
    alpha: float = FIGURE3_ALPHA,
) -> Image.Image:
    """The image with ``mask`` (h, w bool; resized to the image if needed) tinted as in Figure 3."""
    base = to_tensor(img)
    masks = fit_masks(torch.from_numpy(np.ascontiguousarray(mask, dtype=bool))[None], base.shape[-2:])
    out = draw_segmentation_masks(base, masks, alpha=alpha, colors=[color])
    return TF.to_pil_image(out)
