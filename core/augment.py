"""SlotCon's two-view augmentation (docs/method.md §6: the BYOL recipe plus overlap-aware crops).

:class:`TwoViewAugment` reproduces the public release's pipeline (CVMI-Lab/SlotCon
``data/transforms.py``), including the order in which it draws random numbers: Python ``random``
for the crop parameters and the blur sigma, ``torch.rand`` for the flips and torchvision's own
transforms for jitter / grayscale / the ``RandomApply`` coins. Seeding ``random`` and ``torch``
therefore gives the release's crops.

Coordinates: each view carries ``coords`` = the intersection of the two crops, in that view's own
normalised frame ``(x1, y1, x2, y2)`` in [0, 1] (x along the width). A flipped view stores mirrored
coords (x1' = 1 - x2, x2' = 1 - x1) and ``flag=True``. As in the release, when the second crop falls
back to an unconstrained draw that misses the first, the box is empty (x2 < x1 or y2 < y1).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
import torchvision.transforms as T
import torchvision.transforms.functional as TF
import torchvision.transforms.v2 as T2
import torchvision.transforms.v2.functional as F2
from PIL import Image, ImageFilter, ImageOps

from core.recipes import INDEX_CROP, INDEX_RESIZE

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_RATIO = (3.0 / 4.0, 4.0 / 3.0)


class CropBox(NamedTuple):
    """A crop in pixels: top row ``i``, left column ``j``, height ``h``, width ``w``."""

    i: int
    j: int
    h: int
    w: int


# ---------------------------------------------------------------- geometry (pure)


def _draw_box(
    width: int, height: int, scale: tuple[float, float], ratio: tuple[float, float]
) -> tuple[CropBox | None, float]:
    """One RandomResizedCrop try: (box, or None when it does not fit; its target area).

    Draws from Python's ``random`` in the release's order: area, aspect, then top and left if it fits.
    """
    area = height * width
    target_area = random.uniform(*scale) * area
    aspect = math.exp(random.uniform(math.log(ratio[0]), math.log(ratio[1])))
    w = int(round(math.sqrt(target_area * aspect)))
    h = int(round(math.sqrt(target_area / aspect)))
    if 0 < w <= width and 0 < h <= height:
        return CropBox(random.randint(0, height - h), random.randint(0, width - w), h, w), target_area
    return None, target_area


def random_resized_crop_params(
    width: int, height: int, scale: tuple[float, float] = (0.08, 1.0), ratio: tuple[float, float] = DEFAULT_RATIO
) -> CropBox:
    """Returns a RandomResizedCrop box: 10 tries of (area, log-uniform aspect), else a central crop."""
    for _ in range(10):
        box, _ = _draw_box(width, height, scale, ratio)
        if box is not None:
            return box
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        w, h = int(round(height * max(ratio))), height
    else:
        w, h = width, height
    return CropBox((height - h) // 2, (width - w) // 2, h, w)


def intersection_area(a: CropBox, b: CropBox) -> int:
    """Returns the area in pixels shared by two boxes (0 when disjoint)."""
    x = max(0, min(a.j + a.w, b.j + b.w) - max(a.j, b.j))
    y = max(0, min(a.i + a.h, b.i + b.h) - max(a.i, b.i))
    return x * y


def conditioned_crop_params(
    width: int,
    height: int,
    constraint: CropBox,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = DEFAULT_RATIO,
) -> CropBox:
    """Returns a crop box overlapping ``constraint`` by >= 1 % of its own target area (10 tries),
    else an unconstrained :func:`random_resized_crop_params` draw."""
    for _ in range(10):
        box, target_area = _draw_box(width, height, scale, ratio)
        if box is not None and intersection_area(box, constraint) >= 0.01 * target_area:
            return box
    return random_resized_crop_params(width, height, scale, ratio)


def crop_params(
    width: int,
    height: int,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = DEFAULT_RATIO,
    condition_overlap: bool = True,
) -> tuple[CropBox, CropBox]:
    """Returns the two crop boxes of a pair of views (the second conditioned on the first)."""
    first = random_resized_crop_params(width, height, scale, ratio)
    if condition_overlap:
        second = conditioned_crop_params(width, height, first, scale, ratio)
    else:
        second = random_resized_crop_params(width, height, scale, ratio)
    return first, second


def intersection_coords(a: CropBox, b: CropBox) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns the intersection box of crops ``a`` and ``b`` in each crop's normalised frame.

    Two (4,) float32 tensors ``(x1, y1, x2, y2)``; empty (x2 < x1 or y2 < y1) when the crops are disjoint.
    """
    x1, y1 = max(a.j, b.j), max(a.i, b.i)
    x2, y2 = min(a.j + a.w, b.j + b.w), min(a.i + a.h, b.i + b.h)

    def local(c: CropBox) -> torch.Tensor:
        return torch.tensor(
            [(x1 - c.j) / c.w, (y1 - c.i) / c.h, (x2 - c.j) / c.w, (y2 - c.i) / c.h], dtype=torch.float32
        )

    return local(a), local(b)


def flip_coords(coords: torch.Tensor) -> torch.Tensor:
    """Returns (4,) coords mirrored horizontally: ``(1 - x2, y1, 1 - x1, y2)``."""
    return torch.stack([1.0 - coords[2], coords[1], 1.0 - coords[0], coords[3]])


# ---------------------------------------------------------------- photometric parts (PIL)


class GaussianBlur:
    """PIL Gaussian blur with radius sigma ~ U[sigma_min, sigma_max] drawn from Python ``random``."""

    def __init__(self, sigma: tuple[float, float] = (0.1, 2.0)) -> None:
        self.sigma = sigma

    def __call__(self, img: Image.Image) -> Image.Image:
        return img.filter(ImageFilter.GaussianBlur(radius=random.uniform(*self.sigma)))


class Solarize:
    """PIL solarisation: pixels >= ``threshold`` are inverted."""

    def __init__(self, threshold: int = 128) -> None:
        self.threshold = threshold

    def __call__(self, img: Image.Image) -> Image.Image:
        return ImageOps.solarize(img, self.threshold)


def _normalize() -> T.Compose:
    return T.Compose([T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def _photometric_views(enabled: bool) -> tuple[Callable, Callable]:
    """Returns the per-view PIL -> tensor pipelines (view 1, view 2); without photometry: normalise only."""
    if not enabled:
        return _normalize(), _normalize()
    jitter = T.Compose(
        [
            T.RandomApply([T.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.2, hue=0.1)], p=0.8),
            T.RandomGrayscale(p=0.2),
        ]
    )
    view1 = T.Compose([jitter, T.RandomApply([GaussianBlur()], p=1.0), _normalize()])
    view2 = T.Compose(
        [jitter, T.RandomApply([GaussianBlur()], p=0.1), T.RandomApply([Solarize(128)], p=0.2), _normalize()]
    )
    return view1, view2


# ---------------------------------------------------------------- the two-view transforms

Views = tuple[list[torch.Tensor], list[torch.Tensor], list[bool]]


class TwoViewAugment:
    """The release's two-view augmentation: PIL image -> ``(crops, coords, flags)``.

    crops: 2 x (3, size, size) ImageNet-normalised float tensors; coords: 2 x (4,) float32 (see the
    module docstring); flags: 2 x bool (view was flipped). ``photometric=False`` keeps only the
    geometry (crop, resize, flip) and normalisation, for tests and visualisation.
    """

    def __init__(self, size: int = 224, min_scale: float = 0.08, photometric: bool = True, flip_p: float = 0.5) -> None:
        self.size = size
        self.scale = (min_scale, 1.0)
        self.ratio = DEFAULT_RATIO
        self.flip_p = flip_p
        self.view1, self.view2 = _photometric_views(photometric)

    def geometry(self, img: Image.Image) -> tuple[list[Image.Image], list[torch.Tensor], list[bool]]:
        """Returns the two resized, possibly flipped PIL crops with their coords and flip flags."""
        boxes = crop_params(img.width, img.height, self.scale, self.ratio)
        out = [self.size, self.size]
        crops = [TF.resized_crop(img, *b, out, TF.InterpolationMode.BICUBIC) for b in boxes]
        coords = list(intersection_coords(*boxes))
        flags = [False, False]
        for v in range(2):
            if torch.rand(1) < self.flip_p:
                crops[v], coords[v], flags[v] = TF.hflip(crops[v]), flip_coords(coords[v]), True
        return crops, coords, flags

    def __call__(self, img: Image.Image) -> Views:
        crops, coords, flags = self.geometry(img)
        return [self.view1(crops[0]), self.view2(crops[1])], coords, flags


def _tensor_blur(img: torch.Tensor, sigma: float) -> torch.Tensor:
    """Returns a (C, H, W) float image blurred by a separable Gaussian (radius 3 sigma, reflect padding)."""
    radius = max(1, math.ceil(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=img.dtype)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = (k / k.sum()).to(img.device)
    c = img.shape[0]
    x = torch.nn.functional.pad(img[None], (radius, radius, radius, radius), mode="reflect")
    x = torch.nn.functional.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    x = torch.nn.functional.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    return x[0]


class FastTwoViewAugment(TwoViewAugment):
    """Opt-in tensor version of :class:`TwoViewAugment`: same crops, coords, flips and probabilities,
    with the image work done on tensors by ``torchvision.transforms.v2`` ops.

    Crops are resized on uint8, then jitter, grayscale, blur (a separable Gaussian) and solarisation
    run on float32 in [0, 1]. Not bit-exact with the PIL pipeline (other resize and blur kernels,
    float instead of 8-bit intermediate rounding, a different random-number consumption after the
    flips), so it does not reproduce the release's exact views; the probabilities and ranges are
    the same. Accepts a PIL image or a (3, H, W) uint8 tensor.
    On a CPU it is about as fast as the PIL pipeline; it avoids PIL and can run on tensors anywhere.
    """

    def __init__(self, size: int = 224, min_scale: float = 0.08, photometric: bool = True, flip_p: float = 0.5) -> None:
        super().__init__(size, min_scale, photometric=False, flip_p=flip_p)
        self.photometric = photometric
        self.jitter = T2.Compose(
            [
                T2.RandomApply([T2.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.2, hue=0.1)], p=0.8),
                T2.RandomGrayscale(p=0.2),
            ]
        )
        self.normalize = T2.Normalize(IMAGENET_MEAN, IMAGENET_STD)

    def _photometric(self, x: torch.Tensor, blur_p: float, solarize_p: float) -> torch.Tensor:
        x = self.jitter(x)
        if torch.rand(1) < blur_p:
            x = _tensor_blur(x, random.uniform(0.1, 2.0))
        if solarize_p > 0 and torch.rand(1) < solarize_p:
            x = F2.solarize(x, 128 / 255)
        return x

    def __call__(self, img: Image.Image | torch.Tensor) -> Views:
        x = F2.pil_to_tensor(img) if isinstance(img, Image.Image) else img  # (3, H, W) uint8
        height, width = x.shape[-2:]
        boxes = crop_params(width, height, self.scale, self.ratio)
        crops = [
            F2.resized_crop(x, *b, [self.size, self.size], T2.InterpolationMode.BICUBIC, antialias=True) for b in boxes
        ]
        coords = list(intersection_coords(*boxes))
        flags = [False, False]
        for v in range(2):
            if torch.rand(1) < self.flip_p:
                crops[v], coords[v], flags[v] = F2.horizontal_flip(crops[v]), flip_coords(coords[v]), True
        crops = [F2.to_dtype(c, torch.float32, scale=True) for c in crops]  # (3, S, S) in [0, 1]
        if self.photometric:
            crops = [self._photometric(crops[0], 1.0, 0.0), self._photometric(crops[1], 0.1, 0.2)]
        return [self.normalize(c) for c in crops], coords, flags


Batch = tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]


def collate_two_views(batch: Sequence[Views]) -> Batch:
    """Batches ``(crops, coords, flags)`` items into the model's forward input.

    Returns crops: 2 x (B, 3, S, S); coords: 2 x (B, 4) float32; flags: 2 x (B,) bool.
    """
    crops = [torch.stack([item[0][v] for item in batch]) for v in range(2)]
    coords = [torch.stack([item[1][v] for item in batch]).float() for v in range(2)]
    flags = [torch.tensor([bool(item[2][v]) for item in batch], dtype=torch.bool) for v in range(2)]
    return crops, coords, flags


def eval_transform(resize: int = INDEX_RESIZE, crop: int = INDEX_CROP) -> Callable[[Image.Image], torch.Tensor]:
    """Returns the inference preprocessing: PIL image -> (3, crop, crop) normalised tensor
    (shorter side resized to ``resize`` bilinearly, centre crop, ImageNet normalisation)."""
    return T.Compose(
        [
            T.Resize(resize, interpolation=T.InterpolationMode.BILINEAR),
            T.CenterCrop(crop),
            T.ToTensor(),
            T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )
