"""Semantic label protocols: where an image's class map lives, the class names, and fine→coarse remaps.

``synthetic``: ``<root>/labels/<split>/<stem>.png`` with class ids 0..C-1 (names in ``<root>/synthetic.json``).
``cocostuff27``: ``<root>/stuffthingmaps_trainval2017/<split>/<stem>.png`` with fine ids 0..181, merged
into the 27 coarse classes of the COCO-Stuff-27 benchmark (as PiCIE and STEGO merge them;
docs/evaluation.md). 255 is ignore in both.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core import recipes
from core.datasets import load_semantic_label, semantic_label_path
from core.recipes import IGNORE_LABEL

# COCO-Stuff-27 (docs/evaluation.md): fine label value (0..181) → coarse id.
FINE_TO_COARSE = [
    9, 11, 11, 11, 11, 11, 11, 11, 11, 8, 8, 8, 8, 8, 8, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 6, 6, 6, 6, 6, 6,
    6, 6, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 5, 5, 5, 5, 5, 5, 5, 5, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 3,
    3, 3, 3, 3, 3, 3, 3, 3, 3, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 4, 4, 4, 4, 4, 4, 4, 4, 17, 17, 22, 20,
    20, 22, 15, 25, 16, 13, 12, 12, 17, 17, 23, 15, 15, 17, 15, 21, 15, 25, 13, 13, 13, 13, 13, 22, 26, 14,
    14, 15, 22, 21, 21, 24, 20, 22, 15, 17, 16, 15, 22, 24, 21, 17, 25, 16, 21, 17, 22, 16, 21, 21, 25, 21,
    26, 21, 24, 20, 17, 14, 21, 26, 15, 23, 20, 21, 24, 15, 24, 22, 25, 15, 20, 17, 17, 22, 14, 18, 18, 18,
    18, 18, 18, 18, 26, 26, 19, 19, 24,
]  # fmt: skip
COCOSTUFF27_CLASSES = [
    "electronic-things", "appliance-things", "food-things", "furniture-things", "indoor-things",
    "kitchen-things", "accessory-things", "animal-things", "outdoor-things", "person-things",
    "sports-things", "vehicle-things", "ceiling-stuff", "floor-stuff", "food-stuff", "furniture-stuff",
    "rawmaterial-stuff", "textile-stuff", "wall-stuff", "window-stuff", "building-stuff", "ground-stuff",
    "plant-stuff", "sky-stuff", "solid-stuff", "structural-stuff", "water-stuff",
]  # fmt: skip
PROTOCOLS = recipes.PROTOCOLS


class LabelSizeError(ValueError):
    """A label map whose size differs from its image's."""


def _lut(mapping: list[int]) -> np.ndarray:
    lut = np.full(256, IGNORE_LABEL, dtype=np.uint8)
    lut[: len(mapping)] = mapping
    return lut


@dataclass
class LabelProtocol:
    """Class names and the label-map reader of one protocol; ``lut`` maps raw PNG values to class ids."""

    name: str
    root: Path
    split: str
    class_names: list[str]
    lut: np.ndarray | None = None

    @property
    def num_classes(self) -> int:
        """Number of classes C (ids 0..C-1)."""
        return len(self.class_names)

    def label_path(self, image_path: str | os.PathLike) -> Path:
        """The label PNG of an image (raises FileNotFoundError naming the candidates)."""
        return semantic_label_path(self.root, self.split, image_path)

    def load(self, image_path: str | os.PathLike, size: tuple[int, int] | None = None) -> np.ndarray:
        """(H, W) uint8 class ids of an image (255 = ignore). ``size`` (w, h): the image's size, checked.

        Raises FileNotFoundError when there is no label, :class:`LabelSizeError` on a size mismatch.
        """
        path = self.label_path(image_path)
        label = load_semantic_label(path)
        if size is not None and (label.shape[1], label.shape[0]) != tuple(size):
            raise LabelSizeError(
                f"label {path} is {label.shape[1]}x{label.shape[0]} but its image is {size[0]}x{size[1]}"
            )
        if self.lut is not None:
            label = self.lut[label]
        else:
            label = np.where(label < self.num_classes, label, IGNORE_LABEL).astype(np.uint8)
        return label


def make_protocol(name: str, root: str | os.PathLike, split: str) -> LabelProtocol:
    """The :class:`LabelProtocol` called ``name`` (one of :data:`PROTOCOLS`) for a dataset root.

    Raises ValueError for an unknown name or a synthetic root without ``synthetic.json``.
    """
    root = Path(root)
    if name == "cocostuff27":
        return LabelProtocol(name, root, split, list(COCOSTUFF27_CLASSES), _lut(FINE_TO_COARSE))
    if name == "synthetic":
        meta_path = root / "synthetic.json"
        if not meta_path.is_file():
            raise ValueError(f"protocol 'synthetic' needs {meta_path} (generate with `slotcon synth`)")
        classes = json.loads(meta_path.read_text())["classes"]
        names = [c["name"] if isinstance(c, dict) else str(c) for c in classes]
        return LabelProtocol(name, root, split, names)
    raise ValueError(f"unknown protocol {name!r}; choose one of: {', '.join(PROTOCOLS)}")


def detect_protocol(root: str | os.PathLike, split: str | None) -> LabelProtocol | None:
    """The labels a dataset ships, if any: synthetic scenes, COCO-Stuff maps, or None."""
    root = Path(root)
    if split is None:
        return None
    if (root / "synthetic.json").is_file() and (root / "labels" / split).is_dir():
        return make_protocol("synthetic", root, split)
    if (root / "stuffthingmaps_trainval2017" / split).is_dir():
        return make_protocol("cocostuff27", root, split)
    return None
