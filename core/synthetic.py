"""Synthetic scenes: a small, COCO-layout dataset generated on demand (the demo's and the tests' data).

Every image is a scene: a background of two *stuff* regions (one per stuff class, separated by smooth
random boundaries), each filled with its class's texture, and 2-4 *things* (shapes at 45-70 % of the
image side, later ones occluding earlier ones), each filled with its own class texture. Colours are
drawn per region and per instance, so colour never identifies a class; texture (and, for things,
shape) does. Texture periods are 8-16 px at 128 px, so they survive the random resized crops that
SlotCon trains on and are visible to a stride-16 feature map.

The six classes' textures differ in *local edge direction*: horizontal, vertical, diagonal, none, curved
(the disk's soft rings, a sinusoid of the radius, so that they do not look like region boundaries), and all
directions at once (a dot lattice). Every texture looks the same mirrored left-right (the diagonal class draws
either diagonal), because SlotCon's views are flipped at random: a texture that changes under the flip is two
textures to the grouping loss. Scenes hold 2-4 things, so that the classes' pixel shares are close: SlotCon's
centring spreads the prototypes' use evenly, and a class that covers much more of the images takes more than
one prototype. The generator's earlier versions, and the trials that chose this one, are in
docs/demo-quality.md.

Two colour designs (``palette``):

- ``muted`` (default): each region's two texture colours are a dark and a light shade of one random
  hue at low saturation (at most 0.12), with random shade levels. Colour stays random per instance,
  but it is a weak cue next to texture.
- ``vivid`` (generator version 1): two random RGB colours per region, at least 70 apart in luminance.
  Harder: every region then carries a unique, augmentation-robust colour, and SlotCon's grouping loss
  (satisfied by any view-consistent clustering) groups such scenes by colour in a short CPU run,
  ending near the RGB k-means baseline (docs/demo-quality.md).

Layout written by :func:`generate` (the same as COCO + COCO-Stuff, so every real-data code path runs)::

    DIR/train2017/000000000001.jpg ...        JPEG q95, ids start at 1 in each split
    DIR/val2017/000000000001.jpg ...
    DIR/annotations/instances_{split}.json    things, RLE segmentation (pycocotools)
    DIR/annotations/stuff_{split}.json        stuff regions, same format
    DIR/labels/{split}/000000000001.png       mode "L": class id per pixel (0..C-1), 255 = unlabelled
    DIR/synthetic.json                        classes, generator version, arguments

Pixel label = COCO ``category_id - 1`` (the COCO-Stuff convention); the label at a pixel is the
top-most thing there, else its stuff region. Visible (occluded) masks are annotated. Output is
byte-identical for the same arguments: each image's random stream is seeded by (seed, split, index),
so the worker count does not matter.
"""

from __future__ import annotations

import argparse
import colorsys
import json
import logging
import multiprocessing
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from core.recipes import IGNORE_LABEL

logger = logging.getLogger(__name__)

GENERATOR_VERSION = "5"
PALETTES = ("muted", "vivid")
SPLITS = ("train2017", "val2017")
_SPLIT_CODES = {"train2017": 0, "val2017": 1}


@dataclass(frozen=True)
class SyntheticClass:
    """One class: ``id`` is the pixel label, ``id + 1`` the COCO ``category_id``."""

    id: int
    name: str
    kind: str  # "thing" | "stuff"
    description: str


#: Things first (ids 0-3), then stuff (ids 4-5), as in COCO-Stuff. Patterns are in image axes
#: (shapes rotate, their textures do not) with periods given at 128 px (they scale with ``size``).
CLASSES: tuple[SyntheticClass, ...] = (
    SyntheticClass(
        0, "disk", "thing", "disk filled with soft concentric rings (a sinusoid of the radius, period 10 px)"
    ),
    SyntheticClass(1, "box", "thing", "rotated rectangle (aspect 0.75-1.33), vertical stripes (period 8 px)"),
    SyntheticClass(
        2,
        "triangle",
        "thing",
        "rotated equilateral triangle filled with a dot lattice (hexagonal, 12 px spacing, dot radius 3.8 px)",
    ),
    SyntheticClass(
        3,
        "cross",
        "thing",
        "rotated plus sign (arms half as wide as it is long) in a plain colour with a soft shading gradient",
    ),
    SyntheticClass(4, "stripes", "stuff", "horizontal stripes (period 12 px)"),
    SyntheticClass(5, "hatch", "stuff", "diagonal stripes, rising or falling at random per region (period 10 px)"),
)
THING_IDS = tuple(c.id for c in CLASSES if c.kind == "thing")
STUFF_IDS = tuple(c.id for c in CLASSES if c.kind == "stuff")

_MIN_THINGS, _MAX_THINGS = 2, 4  # close pixel shares per class (module doc; docs/demo-quality.md)
_THING_SCALE = (0.45, 0.70)  # shape extent as a fraction of the image side
_PIXEL_NOISE_STD = 3.0


# ---------------------------------------------------------------- rendering (pure, vectorised numpy)


def _two_colours(rng: np.random.Generator, palette: str = "muted") -> tuple[np.ndarray, np.ndarray]:
    """Returns a region's two random RGB colours (float, 0-255), in random order (see ``PALETTES``)."""
    if palette == "muted":
        hue, sat = rng.uniform(0.0, 1.0), rng.uniform(0.0, 0.12)
        dark, light = rng.uniform(0.08, 0.25), rng.uniform(0.78, 0.95)
        a = np.array(colorsys.hsv_to_rgb(hue, sat, dark)) * 255
        b = np.array(colorsys.hsv_to_rgb(hue, sat, light)) * 255
        return (a, b) if rng.random() < 0.5 else (b, a)
    if palette != "vivid":
        raise ValueError(f"palette must be one of {PALETTES}, got {palette!r}")
    while True:
        a, b = rng.uniform(0, 255, size=(2, 3))
        lum = np.array([0.299, 0.587, 0.114])
        if abs(float(a @ lum - b @ lum)) >= 70:
            return a, b


def _stuff_pattern(class_id: int, xx: np.ndarray, yy: np.ndarray, unit: float, rng: np.random.Generator) -> np.ndarray:
    """Returns the class texture as an (H, W) float map in [0, 1]; ``unit`` = pixels per 128-px pixel."""
    name = CLASSES[class_id].name
    if name == "stripes":
        _, oy = rng.uniform(0, 64, size=2) * unit  # random phase (two draws, as in version 2)
        return (((yy + oy) / (12 * unit)) % 1.0 < 0.5).astype(np.float32)
    if name == "hatch":
        ox = rng.uniform(0, 64) * unit
        sign = 1.0 if rng.random() < 0.5 else -1.0  # rising or falling: the class is closed under the flip
        return (((xx + sign * yy + ox) / (10 * unit * np.sqrt(2))) % 1.0 < 0.5).astype(np.float32)
    raise ValueError(f"not a stuff class: {name}")


def _thing_pattern(
    class_id: int,
    xx: np.ndarray,
    yy: np.ndarray,
    cx: float,
    cy: float,
    extent: float,
    unit: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Returns the thing class texture as an (H, W) float map in [0, 1]."""
    name = CLASSES[class_id].name
    if name == "triangle":
        ox, oy = rng.uniform(0, 64, size=2) * unit  # random phase
        spacing, rows = 12 * unit, 12 * unit * np.sqrt(3) / 2  # a hexagonal lattice: rows shifted by half
        row = np.floor((yy + oy) / rows)
        u = (xx + ox) / spacing + 0.5 * (row % 2)
        v = (yy + oy) / rows
        du, dv = u % 1.0 - 0.5, (v % 1.0 - 0.5) * (rows / spacing)
        return (du * du + dv * dv < 0.32**2).astype(np.float32)  # dot radius 0.32 × spacing
    phase = rng.uniform(0, 1)
    if name == "disk":  # soft rings: a sinusoid of the radius, no hard edge (version 5)
        r = np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2)
        return (0.5 + 0.5 * np.cos(2 * np.pi * (r / (10 * unit) + phase))).astype(np.float32)
    if name == "box":
        return ((xx / (8 * unit) + phase) % 1.0 < 0.5).astype(np.float32)
    if name == "cross":
        angle = rng.uniform(0, 2 * np.pi)
        t = ((xx - cx) * np.cos(angle) + (yy - cy) * np.sin(angle)) / extent
        return np.clip(0.5 + 0.35 * t, 0.0, 1.0).astype(np.float32)
    raise ValueError(f"not a thing class: {name}")


def _thing_mask(
    class_id: int, xx: np.ndarray, yy: np.ndarray, cx: float, cy: float, extent: float, rng: np.random.Generator
) -> np.ndarray:
    """Returns the (H, W) bool mask of a shape of the given class, extent (pixels) and random pose."""
    name = CLASSES[class_id].name
    dx, dy = xx - cx, yy - cy
    theta = rng.uniform(0, 2 * np.pi)
    c, s = np.cos(theta), np.sin(theta)
    u, v = c * dx + s * dy, -s * dx + c * dy  # shape-frame coordinates
    half = extent / 2
    if name == "disk":
        return dx * dx + dy * dy <= half * half
    if name == "box":
        aspect = rng.uniform(0.75, 4 / 3)
        return (np.abs(u) <= half * np.sqrt(aspect)) & (np.abs(v) <= half / np.sqrt(aspect))
    if name == "triangle":
        inside = np.ones_like(u, dtype=bool)
        apothem = half * 0.75  # inradius; the area (2.9 half²) is 93 % of the disk's, so the classes' shares are close
        for k in range(3):  # three half-planes of an equilateral triangle
            a = np.pi / 2 + 2 * np.pi * k / 3
            inside &= u * np.cos(a) + v * np.sin(a) <= apothem
        return inside
    if name == "cross":
        arm = extent / 4
        return ((np.abs(u) <= half) & (np.abs(v) <= arm)) | ((np.abs(u) <= arm) & (np.abs(v) <= half))
    raise ValueError(f"not a thing class: {name}")


def _stuff_layout(rng: np.random.Generator, xx: np.ndarray, yy: np.ndarray, size: int) -> np.ndarray:
    """Returns an (H, W) int map of region indices 0..n-1: a warped Voronoi partition of 2-3 cells.

    With fewer stuff classes than cells, the extra cells join the last region (n = the stuff class
    count at most), so every stuff class of the scene is one region, possibly in two pieces.
    """
    n = int(rng.integers(2, 4))
    while True:
        seeds = rng.uniform(0.15, 0.85, size=(n, 2))
        dists = np.linalg.norm(seeds[:, None] - seeds[None], axis=-1)
        if dists[np.triu_indices(n, 1)].min() >= 0.35:
            break
    amp = rng.uniform(0.04, 0.1, size=2)
    freq = rng.uniform(1.0, 2.5, size=2)
    phase = rng.uniform(0, 2 * np.pi, size=2)
    u, v = xx / size, yy / size
    uw = u + amp[0] * np.sin(2 * np.pi * freq[0] * v + phase[0])
    vw = v + amp[1] * np.sin(2 * np.pi * freq[1] * u + phase[1])
    d = (uw[None] - seeds[:, 0, None, None]) ** 2 + (vw[None] - seeds[:, 1, None, None]) ** 2
    return np.minimum(np.argmin(d, axis=0), len(STUFF_IDS) - 1)


Segments = list[tuple[int, np.ndarray]]


def render_scene(
    rng: np.random.Generator, size: int, palette: str = "muted"
) -> tuple[np.ndarray, np.ndarray, Segments]:
    """Renders one scene (``palette``: one of ``PALETTES``).

    Returns ``(image, label, segments)``: image (size, size, 3) uint8 RGB; label (size, size) uint8
    class ids; segments: (class_id, (size, size) bool visible mask) per stuff region and per thing
    instance with a visible pixel, stuff first, things in drawing order (bottom to top).
    """
    unit = size / 128
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    image = np.zeros((size, size, 3), np.float32)
    label = np.full((size, size), IGNORE_LABEL, np.uint8)

    regions = _stuff_layout(rng, xx, yy, size)
    n_regions = int(regions.max()) + 1
    stuff_classes = rng.choice(STUFF_IDS, size=n_regions, replace=False)
    stuff: Segments = []
    for r, cls in enumerate(stuff_classes):
        m = regions == r
        if not m.any():
            continue
        a, b = _two_colours(rng, palette)
        p = _stuff_pattern(int(cls), xx, yy, unit, rng)[m][:, None]
        image[m] = a * (1 - p) + b * p
        label[m] = cls
        stuff.append((int(cls), m))

    things: Segments = []
    for _ in range(int(rng.integers(_MIN_THINGS, _MAX_THINGS + 1))):
        cls = int(rng.choice(THING_IDS))
        extent = rng.uniform(*_THING_SCALE) * size
        lo, hi = 0.3 * extent, size - 0.3 * extent
        cx, cy = rng.uniform(lo, hi, size=2)
        m = _thing_mask(cls, xx, yy, cx, cy, extent, rng)
        a, b = _two_colours(rng, palette)
        p = _thing_pattern(cls, xx, yy, cx, cy, extent, unit, rng)[m][:, None]
        image[m] = a * (1 - p) + b * p
        label[m] = cls
        for _, earlier in things:
            earlier &= ~m
        things.append((cls, m))

    image += rng.normal(0, _PIXEL_NOISE_STD, size=image.shape)
    image = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    segments = [(c, m & ~np.any([t for _, t in things], axis=0)) for c, m in stuff] + things
    return image, label, [(c, m) for c, m in segments if m.any()]


# ---------------------------------------------------------------- writing


def image_seed(seed: int, split: str, index: int) -> np.random.SeedSequence:
    """Returns the seed sequence of image ``index`` (0-based) of ``split``: independent of workers."""
    return np.random.SeedSequence([seed, _SPLIT_CODES[split], index])


def _render_and_write(job: tuple[Path, str, int, int, int, str]) -> tuple[dict, list[dict]]:
    """Renders image ``index`` of a split, writes its JPEG and label PNG.

    Returns ``(image_record, segments)``: the COCO image entry and per segment a dict with
    ``category_id``, ``kind``, RLE ``segmentation`` (counts as str), ``area`` and ``bbox``.
    """
    out, split, index, size, seed, palette = job
    image_id = index + 1
    rng = np.random.default_rng(image_seed(seed, split, index))
    image, label, segments = render_scene(rng, size, palette)
    name = f"{image_id:012d}"
    Image.fromarray(image, "RGB").save(out / split / f"{name}.jpg", quality=95)
    Image.fromarray(label, "L").save(out / "labels" / split / f"{name}.png")
    records = []
    for cls, m in segments:
        rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
        records.append(
            {
                "category_id": cls + 1,
                "kind": CLASSES[cls].kind,
                "segmentation": {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")},
                "area": float(mask_utils.area(rle)),
                "bbox": [float(v) for v in mask_utils.toBbox(rle)],
            }
        )
    image_record = {"id": image_id, "file_name": f"{name}.jpg", "width": size, "height": size}
    return image_record, records


def _coco_json(images: list[dict], annotations: list[dict], kind: str) -> dict:
    """Returns a COCO-format dict for the classes of ``kind``."""
    return {
        "info": {"description": f"SlotCon Explorer synthetic scenes ({kind})", "version": GENERATOR_VERSION},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": [{"id": c.id + 1, "name": c.name, "supercategory": kind} for c in CLASSES if c.kind == kind],
    }


def _write_json(path: Path, obj: dict) -> None:
    path.write_text(json.dumps(obj, separators=(",", ":"), sort_keys=True))


def generate(
    out: Path | str,
    num_train: int = 2000,
    num_val: int = 200,
    size: int = 128,
    seed: int = 0,
    workers: int = 2,
    palette: str = "muted",
) -> dict:
    """Generates the synthetic scenes dataset under ``out`` (layout in the module docstring).

    Returns a summary dict: ``out``, per split the number of images, instances and stuff regions,
    ``classes`` and ``seconds``. Existing files of the same names are overwritten.
    """
    if size < 32:
        raise ValueError(f"size must be >= 32 px, got {size}")
    if palette not in PALETTES:
        raise ValueError(f"palette must be one of {PALETTES}, got {palette!r}")
    if num_train < 0 or num_val < 0:
        raise ValueError("num_train and num_val must be >= 0")
    out = Path(out)
    start = time.perf_counter()
    counts = {"train2017": num_train, "val2017": num_val}
    (out / "annotations").mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        (out / split).mkdir(exist_ok=True)
        (out / "labels" / split).mkdir(parents=True, exist_ok=True)

    jobs = {split: [(out, split, i, size, seed, palette) for i in range(n)] for split, n in counts.items()}
    summary: dict = {"out": str(out), "classes": [c.name for c in CLASSES]}
    pool = multiprocessing.get_context("fork").Pool(workers) if workers > 1 else None
    try:
        for split in SPLITS:
            if pool is not None:
                results = pool.map(_render_and_write, jobs[split], chunksize=16)
            else:
                results = [_render_and_write(j) for j in jobs[split]]
            images = [r[0] for r in results]
            anns: dict[str, list[dict]] = {"thing": [], "stuff": []}
            for image_record, records in results:
                for rec in records:
                    kind = rec.pop("kind")
                    anns[kind].append({"id": len(anns[kind]) + 1, "image_id": image_record["id"], "iscrowd": 0, **rec})
            for kind, prefix in (("thing", "instances"), ("stuff", "stuff")):
                path = out / "annotations" / f"{prefix}_{split}.json"
                _write_json(path, _coco_json(images, anns[kind], kind))
            summary[split] = {
                "images": len(images),
                "instances": len(anns["thing"]),
                "stuff_regions": len(anns["stuff"]),
            }
    finally:
        if pool is not None:
            pool.close()
            pool.join()

    meta = {
        "generator": "core.synthetic",
        "version": GENERATOR_VERSION,
        "args": {"num_train": num_train, "num_val": num_val, "size": size, "seed": seed, "palette": palette},
        "classes": [asdict(c) for c in CLASSES],
        "ignore_label": IGNORE_LABEL,
        "label_convention": "pixel label = category_id - 1",
    }
    (out / "synthetic.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    summary["seconds"] = round(time.perf_counter() - start, 3)
    logger.info("synthetic scenes written to %s in %.1f s", out, summary["seconds"])
    return summary


def get_args_parser() -> argparse.ArgumentParser:
    """Returns the parser of ``slotcon synth``."""
    p = argparse.ArgumentParser(
        prog="slotcon synth",
        description="Generate the synthetic scenes dataset "
        "(COCO layout: images, instance/stuff RLE annotations, label PNGs).",
    )
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument("--num-train", type=int, default=2000, help="training images (default 2000)")
    p.add_argument("--num-val", type=int, default=200, help="validation images (default 200)")
    p.add_argument("--size", type=int, default=128, help="image side in pixels (default 128)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument(
        "--palette",
        choices=PALETTES,
        default="muted",
        help="region colours: muted (default; random hue, low saturation) or vivid (random RGB, "
        "generator v1; a short CPU run groups these by colour)",
    )
    p.add_argument(
        "--version",
        action="version",
        version=GENERATOR_VERSION,
        help="print the generator version (written to synthetic.json) and exit",
    )
    p.add_argument("--workers", type=int, default=2, help="worker processes; output does not depend on it")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point of ``slotcon synth``; prints the summary as JSON and returns the exit status."""
    args = get_args_parser().parse_args(argv)
    summary = generate(
        args.out,
        num_train=args.num_train,
        num_val=args.num_val,
        size=args.size,
        seed=args.seed,
        workers=args.workers,
        palette=args.palette,
    )
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
