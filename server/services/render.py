"""Image rendering: the region the model saw (cropped or outlined), mask overlays (the paper's Figure 3
look), an all-slots overlay with a fixed 256+ colour palette, label-map PNGs and thumbnails.

Pixels are drawn with ``torchvision.utils.draw_segmentation_masks`` and PIL; nothing loops over pixels.
"""

from __future__ import annotations

import io

import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image, ImageDraw
from torchvision.utils import draw_segmentation_masks

# Figure 3's red and the mask overlay are shared with the concept figures (indexer.figure).
from indexer.overlay import FIGURE3_ALPHA, FIGURE3_COLOR, overlay_mask  # noqa: F401 - re-exported
from indexer.overlay import fit_masks as _fit_masks
from indexer.overlay import to_tensor as _to_tensor
from indexer.segments import palette

SLOTS_ALPHA = 0.55
#: The outline of the region the model saw, where an image is shown whole around it.
BOX_COLOR = (255, 255, 255)
#: How an indexed image is shown: ``crop`` the region the model saw (the release's figures), ``full`` the
#: whole image with that region outlined.
VIEWS = ("crop", "full")


def color_of(k: int) -> tuple[int, int, int]:
    """The palette colour of prototype ``k`` as an (r, g, b) tuple."""
    table = palette(k + 1)
    return tuple(int(c) for c in table[k])  # type: ignore[return-value]


def outline_box(img: Image.Image, box: tuple[int, int, int, int] | list[int], color=BOX_COLOR) -> Image.Image:
    """A copy of ``img`` with the (x, y, w, h) box outlined just outside it (a light line, then a dark one,
    visible on any image; no pixel of the box is painted over); the image itself when the box is the whole
    image."""
    x, y, w, h = (int(v) for v in box)
    if (x, y, w, h) == (0, 0, img.width, img.height):
        return img
    out = img.convert("RGB")  # a copy
    draw = ImageDraw.Draw(out)
    draw.rectangle([x - 2, y - 2, x + w + 1, y + h + 1], outline=(0, 0, 0))
    draw.rectangle([x - 1, y - 1, x + w, y + h], outline=tuple(color))
    return out


def show_region(img: Image.Image, box: tuple[int, int, int, int] | list[int], view: str) -> Image.Image:
    """What a user sees of a rendered image whose masks cover only ``box`` (x, y, w, h): the box itself
    (``view="crop"``) or the whole image with the box outlined (``"full"``); never an unassigned border
    passed off as part of a mask."""
    if view not in VIEWS:
        raise ValueError(f"view={view!r}; choose one of {', '.join(VIEWS)}")
    x, y, w, h = (int(v) for v in box)
    if view == "crop":
        return img if (x, y, w, h) == (0, 0, img.width, img.height) else img.crop((x, y, x + w, y + h))
    return outline_box(img, (x, y, w, h))


def overlay_labels(img: Image.Image, labels: np.ndarray, alpha: float = SLOTS_ALPHA) -> Image.Image:
    """All slots of an image at once: each prototype's pixels in its palette colour.

    labels: (h, w) prototype ids (negative = unassigned), resized to the image if needed.
    """
    base = _to_tensor(img)
    lab = torch.from_numpy(np.ascontiguousarray(labels).astype(np.int64))
    ids = [int(k) for k in torch.unique(lab) if k >= 0]
    if not ids:
        return img.convert("RGB")
    masks = _fit_masks(lab[None] == torch.tensor(ids)[:, None, None], base.shape[-2:])
    table = palette(max(ids) + 1)
    colors = [tuple(int(c) for c in table[k]) for k in ids]
    return TF.to_pil_image(draw_segmentation_masks(base, masks, alpha=alpha, colors=colors))


def labels_image(labels: np.ndarray) -> Image.Image:
    """(h, w) prototype ids → a palette ("P") image whose pixel values *are* the ids (K ≤ 256),
    coloured with :func:`palette`; for K > 256 an RGB image in palette colours."""
    labels = np.asarray(labels)
    table = palette(int(labels.max(initial=0)) + 1)
    if labels.max(initial=0) < 256:
        img = Image.fromarray(labels.astype(np.uint8), mode="P")
        img.putpalette(table[:256].flatten().tolist())
        return img
    return Image.fromarray(table[labels], mode="RGB")


def thumbnail(img: Image.Image, size: int | None) -> Image.Image:
    """A copy whose longer side is at most ``size`` (aspect kept); ``None`` returns ``img``."""
    if size is None or max(img.size) <= size:
        return img
    out = img.copy()
    out.thumbnail((size, size), Image.Resampling.BICUBIC)
    return out


def to_png(img: Image.Image) -> bytes:
    """PNG bytes (fast compression: these are generated on every request)."""
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def to_jpeg(img: Image.Image, quality: int = 88) -> bytes:
    """JPEG bytes of the RGB image."""
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="JPEG", quality=quality)
    return buf.getvalue()
