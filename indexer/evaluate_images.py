"""Which images an evaluation scores: the benchmark's curated list by default, counted against the data root.

COCO-Stuff-27 papers (IIC, PiCIE, STEGO, SlotCon's Table 5) score the 2,175 val2017 images of IIC's curated
list (at least 360 px a side, at least 75 % stuff), and the list changes the numbers, so
``--protocol cocostuff27`` on ``val2017`` reads the copy shipped in ``indexer/data/`` (its source and licence
in ``indexer/data/README.md``) unless told otherwise. Images of a list that the data root lacks are counted
and named (a warning, and ``2,170/2,175`` in the score's tag); a list none of whose images is present is an
error. Without a list every image of the split is scored, and the tag says so (``all-val2017``).
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)

#: The curated COCO-Stuff-27 val2017 list shipped with the indexer, its name in score tags, its length.
CURATED_LIST = Path(__file__).resolve().parent / "data" / "cocostuff27_curated_val2017.txt"
CURATED_NAME = "cocostuff27-curated-val2017"
CURATED_MD5 = "de66cfb97c6ea796c3ba8e001edda199"
CURATED_SIZE = 2175
#: How many missing images a result names (all of them are counted).
MISSING_NAMED = 100


@dataclass(frozen=True)
class ImageSelection:
    """The images chosen for an evaluation: ``items`` (id, path), the list's ``name``, how many images it
    names (``listed``), the names of those not in the data root (``missing``, all of them) and the list's
    path (None when every image of the split is used)."""

    items: list[tuple[int, Path]]
    name: str
    listed: int
    missing: list[str] = field(default_factory=list)
    path: str | None = None


def image_key(name: str) -> str:
    """The key an image is matched on: its file stem without leading zeros when numeric, so ``139``,
    ``000000000139`` and ``000000000139.jpg`` are one image."""
    stem = Path(name).stem
    return stem.lstrip("0") or "0" if stem.isdigit() else stem


def read_list(path: str | os.PathLike) -> dict[str, str]:
    """{key: the name as the list writes it} of a curated list (one id or file name a line, first token
    used; blank lines skipped). ValueError for an empty list."""
    names: dict[str, str] = {}
    for line in Path(path).read_text().splitlines():
        if line.strip():
            token = line.strip().split()[0]
            names.setdefault(image_key(token), token)
    if not names:
        raise ValueError(f"curated list {path} is empty")
    return names


def read_curated_list(path: str | os.PathLike) -> set[str]:
    """The image keys of a curated list (:func:`image_key`)."""
    return set(read_list(path))


def list_name(path: str | os.PathLike) -> str:
    """The name a list goes by in score tags: the shipped curated list's name for any file with its content
    (PiCIE's ``Coco164kFull_Stuff_Coarse_7.txt`` included), else the file's name."""
    if hashlib.md5(Path(path).read_bytes()).hexdigest() == CURATED_MD5:
        return CURATED_NAME
    return Path(path).name


def default_list(protocol: str, split: str | None) -> Path | None:
    """The list a protocol scores by default: the shipped curated list for COCO-Stuff-27's val2017, else
    None (every image)."""
    return CURATED_LIST if protocol == "cocostuff27" and split == "val2017" else None


def select_images(
    paths: list[Path],
    *,
    protocol: str,
    split: str | None,
    curated_list: str | os.PathLike | None = None,
    all_images: bool = False,
    limit: int | None = None,
) -> ImageSelection:
    """The images to score among ``paths`` (the split's images, sorted; ids are their positions, as in an
    index of the same root): those of ``curated_list``, else of the protocol's :func:`default_list` unless
    ``all_images``, then the first ``limit``. Warns with the count of listed images not found; ValueError
    when none of them is."""
    items = list(enumerate(paths))
    path = None if all_images else (curated_list or default_list(protocol, split))
    if path is None:
        chosen = ImageSelection(items, f"all-{split or 'folder'}", len(items))
    else:
        listed = read_list(path)
        present = {image_key(p.name) for _, p in items}
        missing = sorted(name for key, name in listed.items() if key not in present)
        items = [(i, p) for i, p in items if image_key(p.name) in listed]
        if not items:
            raise ValueError(f"none of the {len(listed):,} images of the list {path} is in the data ({split})")
        if missing:
            logger.warning(
                "%d of the %d images of %s are not in the data root: scoring %d/%d (missing: %s%s)",
                len(missing), len(listed), Path(path).name, len(items), len(listed), ", ".join(missing[:5]),
                ", ..." if len(missing) > 5 else "",
            )  # fmt: skip
        chosen = ImageSelection(items, list_name(path), len(listed), missing, str(path))
    if limit is not None:
        chosen = ImageSelection(chosen.items[:limit], chosen.name, chosen.listed, chosen.missing, chosen.path)
    return chosen
