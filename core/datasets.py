"""Image sources: layout detection, robust RGB decoding, datasets, COCO / COCO-Stuff label paths.

Layouts recognised by :func:`find_images` (``base = root/split`` when a split is given, else ``root``):

- **coco**: image files directly inside ``root/<split>/`` (``val2017/*.jpg``); only that level is read.
- **imagenet**: no images directly inside ``root/<split>/``, but images one level down
  (``root/<split>/<class>/*``); only that level is read.
- **folder**: anything else: every image under ``base``, recursively. With no split, a folder is
  always searched recursively (symlinked folders followed), except that directories holding labels
  or annotations (``annotations``, ``labels``, ``stuffthingmaps*``) and hidden directories are
  skipped. So a COCO root without a split yields the images of *all* its split folders, val2017 and
  test2017 included (the folders used are logged); the trainer therefore names its splits (COCO+ is
  ``train2017`` and ``unlabeled2017``, each read with its own split) and refuses a split-less COCO root.

Image files are recognised by extension (case-insensitive): see :data:`IMAGE_EXTENSIONS`. Results
are sorted by their path relative to ``base``, so they are the same on every machine.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch.utils.data
from PIL import Image, ImageOps

from core.augment import TwoViewAugment

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm"})
_SKIPPED_DIRS = ("annotations", "labels")
_SKIPPED_PREFIXES = ("stuffthingmaps", ".")
ANNOTATION_KINDS = ("instances", "stuff")


class ImageReadError(OSError):
    """An image file that cannot be decoded; ``path`` names it."""

    def __init__(self, path: str | os.PathLike, reason: str | None = None) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"cannot read image {self.path}" + (f": {reason}" if reason else ""))

    def __reduce__(self) -> tuple:  # keep (path, reason) through pickling (DataLoader workers)
        return (type(self), (self.path, self.reason))


# ---------------------------------------------------------------- finding images


def _is_image(p: Path) -> bool:
    return p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS


def _direct_images(d: Path) -> list[Path]:
    return [p for p in d.iterdir() if _is_image(p)]


def _skipped(name: str) -> bool:
    return name in _SKIPPED_DIRS or name.startswith(_SKIPPED_PREFIXES)


def _recursive_images(d: Path) -> list[Path]:
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(d, followlinks=True):
        dirnames[:] = [n for n in dirnames if not _skipped(n)]
        found.extend(Path(dirpath) / f for f in filenames if Path(f).suffix.lower() in IMAGE_EXTENSIONS)
    return found


def _coco_splits(root: Path) -> list[str]:
    """Returns the split folders of a COCO-like root (has ``annotations/``), else []."""
    if not (root / "annotations").is_dir():
        return []
    return sorted(
        d.name for d in root.iterdir() if d.is_dir() and not _skipped(d.name) and any(_is_image(p) for p in d.iterdir())
    )


def detect_layout(root: str | os.PathLike, split: str | None = None) -> str:
    """Returns ``"coco"``, ``"imagenet"`` or ``"folder"`` for ``root`` (and ``split``), see the module doc.

    Raises FileNotFoundError when ``root`` (or ``root/split``) is not a directory.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset root {str(root)!r} does not exist or is not a directory")
    if split is None:
        return "folder"
    base = root / split
    if not base.is_dir():
        available = sorted(d.name for d in root.iterdir() if d.is_dir() and not _skipped(d.name))
        raise FileNotFoundError(
            f"split folder {str(base)!r} does not exist (folders in {str(root)!r}: {', '.join(available) or 'none'})"
        )
    if _direct_images(base):
        return "coco"
    if any(_direct_images(d) for d in base.iterdir() if d.is_dir()):
        return "imagenet"
    return "folder"


def find_images(root: str | os.PathLike, split: str | None = None) -> list[Path]:
    """Returns the sorted image paths of a dataset (layout rules in the module docstring).

    Raises FileNotFoundError naming the path when ``root`` or ``root/split`` is missing, and ValueError
    naming root, split and the layouts tried when no image is found.
    """
    root = Path(root)
    layout = detect_layout(root, split)
    if split is None and (splits := _coco_splits(root)):
        logger.info("%s looks like a COCO root and no split was given: using the images of %s", root, ", ".join(splits))
    base = root / split if split is not None else root
    if layout == "coco":
        paths = _direct_images(base)
    elif layout == "imagenet":
        paths = [p for d in base.iterdir() if d.is_dir() and not _skipped(d.name) for p in _direct_images(d)]
    else:
        paths = _recursive_images(base)
    if not paths:
        raise ValueError(
            f"no images found in root {str(root)!r}, split {split!r} (tried layouts: coco "
            f"root/<split>/*.jpg, imagenet root/<split>/<class>/*, any folder recursively; "
            f"extensions {', '.join(sorted(IMAGE_EXTENSIONS))})"
        )
    paths.sort(key=lambda p: p.relative_to(base).as_posix())
    logger.info("found %d images in %s (layout %s)", len(paths), base, layout)
    return paths


# ---------------------------------------------------------------- decoding


def to_rgb(img: Image.Image) -> Image.Image:
    """Returns ``img`` as 8-bit RGB: 16/32-bit and float greys rescaled, alpha composited on white."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(img, dtype=np.float64)
        # "I" holds 16-bit PNGs in Pillow; wider data is rescaled by its own maximum.
        top = 65535.0 if img.mode != "I" or arr.max(initial=0) <= 65535 else float(arr.max())
        img = Image.fromarray(np.clip(np.rint(arr * 255.0 / top), 0, 255).astype(np.uint8), "L")
    elif img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min(initial=0)), float(arr.max(initial=1))
        img = Image.fromarray(np.rint((arr - lo) / max(hi - lo, 1e-12) * 255).astype(np.uint8), "L")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    return img if img.mode == "RGB" else img.convert("RGB")


def load_rgb(path_or_file: str | os.PathLike | IO[bytes], *, upright: bool = False) -> Image.Image:
    """Returns the image as a decoded 8-bit RGB PIL image.

    ``upright=False`` (datasets, the index, evaluation) keeps the stored pixel frame: COCO's annotations
    and COCO-Stuff's label maps are in that frame, and the release and PiCIE never apply EXIF orientation.
    ``upright=True`` (uploads) applies the EXIF orientation, so a photo is the way up its owner sees it.
    Handles palette, 1-bit, grey, 16-bit, CMYK, YCbCr and alpha (composited on white) images.
    Raises :class:`ImageReadError` naming the file when it cannot be opened or decoded.
    """
    name = (
        path_or_file if isinstance(path_or_file, (str, os.PathLike)) else getattr(path_or_file, "name", "<file object>")
    )
    try:
        with Image.open(path_or_file) as img:
            img.load()
            if upright:
                img = ImageOps.exif_transpose(img) or img
            return to_rgb(img)
    except ImageReadError:
        raise
    except Exception as e:  # PIL raises OSError, ValueError, SyntaxError, DecompressionBombError, ...
        raise ImageReadError(name, f"{type(e).__name__}: {e}") from e


# ---------------------------------------------------------------- datasets


class ImageDataset(torch.utils.data.Dataset):
    """Images from a list of paths; item ``i`` is ``(transform(load_rgb(paths[i])), i)`` (stored pixel frame,
    as the release reads them).

    An unreadable file raises :class:`ImageReadError`; with ``skip_unreadable=True`` a warning is
    logged instead and the next readable image (wrapping around) is returned with *its* index.
    Without a transform the item is the PIL image.
    """

    def __init__(
        self,
        paths: Sequence[str | os.PathLike],
        transform: Callable[[Image.Image], Any] | None = None,
        skip_unreadable: bool = False,
    ) -> None:
        self.paths = [Path(p) for p in paths]
        self.transform = transform
        self.skip_unreadable = skip_unreadable

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, index: int) -> tuple[Image.Image, int]:
        """Returns ``(RGB image, index actually used)``, applying the ``skip_unreadable`` policy."""
        n = len(self.paths)
        for k in range(n if self.skip_unreadable else 1):
            i = (index + k) % n
            try:
                return load_rgb(self.paths[i]), i
            except ImageReadError as e:
                if not self.skip_unreadable:
                    raise
                logger.warning("skipping unreadable image: %s", e)
        raise ImageReadError(self.paths[index], "no readable image in the dataset")

    def __getitem__(self, index: int) -> tuple[Any, int]:
        img, i = self.load(index)
        return (self.transform(img) if self.transform is not None else img), i


class TwoViewDataset(ImageDataset):
    """Images for SlotCon pretraining; item = ``(crops, coords, flags)`` of :class:`TwoViewAugment`.

    crops: 2 x (3, S, S) float tensors, coords: 2 x (4,) float32, flags: 2 x bool. Batch them with
    :func:`core.augment.collate_two_views`.
    """

    def __init__(
        self, paths: Sequence[str | os.PathLike], augment: Callable | None = None, skip_unreadable: bool = False
    ) -> None:
        super().__init__(paths, augment if augment is not None else TwoViewAugment(), skip_unreadable)

    def __getitem__(self, index: int) -> tuple[list, list, list]:  # type: ignore[override]
        img, _ = self.load(index)
        return self.transform(img)


# ---------------------------------------------------------------- COCO / COCO-Stuff labels


def coco_annotation_path(root: str | os.PathLike, split: str, kind: str = "instances", must_exist: bool = True) -> Path:
    """Returns ``root/annotations/{kind}_{split}.json`` (kind: ``instances`` or ``stuff``).

    Raises ValueError for another kind, FileNotFoundError when ``must_exist`` and the file is missing.
    """
    if kind not in ANNOTATION_KINDS:
        raise ValueError(f"unknown annotation kind {kind!r}; choose from {', '.join(ANNOTATION_KINDS)}")
    path = Path(root) / "annotations" / f"{kind}_{split}.json"
    if must_exist and not path.is_file():
        raise FileNotFoundError(f"annotation file {str(path)!r} not found")
    return path


def semantic_label_path(root: str | os.PathLike, split: str, image_path: str | os.PathLike) -> Path:
    """Returns the semantic label PNG of an image: ``root/labels/<split>/<stem>.png`` (synthetic scenes)
    if present, else ``root/stuffthingmaps_trainval2017/<split>/<stem>.png`` (COCO-Stuff).

    Raises FileNotFoundError naming both candidates when neither exists.
    """
    stem = Path(image_path).stem
    candidates = [
        Path(root) / "labels" / split / f"{stem}.png",
        Path(root) / "stuffthingmaps_trainval2017" / split / f"{stem}.png",
    ]
    for path in candidates:
        if path.is_file():
            return path
    tried = ", ".join(map(str, candidates))
    raise FileNotFoundError(f"no semantic label for {str(image_path)!r}; tried {tried}")


def load_semantic_label(path: str | os.PathLike) -> np.ndarray:
    """Returns the (H, W) uint8 label map of a PNG, read without any colour conversion (255 = ignore)."""
    with Image.open(path) as img:
        if img.mode not in ("L", "P"):
            raise ValueError(f"label map {str(path)!r} has mode {img.mode!r}; expected 8-bit 'L' or 'P'")
        return np.array(img, dtype=np.uint8)


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def loader_workers(requested: int | None, device: str | torch.device, processes: int = 1) -> int:
    """DataLoader worker processes for an inference job (index, evaluation): ``requested`` when given, else
    the cores left over beside the model. On a CPU the model's ``torch.get_num_threads()`` threads already
    fill that many cores, and a decoding process beside them takes its cycles from the convolutions
    (docs/performance.md, Indexing), so only spare cores get workers (at most 4); on a GPU, up to 8 workers
    keep the device fed. ``processes``: the job's processes on this node, which share its cores (under
    torchrun its ``LOCAL_WORLD_SIZE``, which the caller reads), so each gets its share of what is spare."""
    if requested is not None:
        return max(0, int(requested))
    local = max(1, int(processes))
    cores = available_cores()
    if torch.device(device).type == "cpu":
        return max(0, min(4, (cores - local * torch.get_num_threads()) // local))
    return max(0, min(8, (cores - local) // local))
