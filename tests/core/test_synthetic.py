"""Tests of core.synthetic: COCO-valid annotations that match the label maps, determinism, CLI."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from core import synthetic
from core.datasets import (
    coco_annotation_path,
    detect_layout,
    find_images,
    load_semantic_label,
    semantic_label_path,
)
from core.synthetic import CLASSES, IGNORE_LABEL, STUFF_IDS, THING_IDS, generate, render_scene


def _hashes(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    generate(root, num_train=6, num_val=4, size=64, seed=3, workers=1)
    return root


def test_classes_are_consistent() -> None:
    assert [c.id for c in CLASSES] == list(range(len(CLASSES)))
    assert len(THING_IDS) == 4 and len(STUFF_IDS) == 2
    assert max(THING_IDS) < min(STUFF_IDS)  # things first, as in COCO-Stuff


def test_layout_and_metadata(synth_root: Path) -> None:
    assert detect_layout(synth_root, "val2017") == "coco"
    train = find_images(synth_root, "train2017")
    assert [p.name for p in train] == [f"{i:012d}.jpg" for i in range(1, 7)]
    meta = json.loads((synth_root / "synthetic.json").read_text())
    assert meta["args"] == {"num_train": 6, "num_val": 4, "size": 64, "seed": 3, "palette": "muted"}
    assert [c["name"] for c in meta["classes"]] == [c.name for c in CLASSES]
    with Image.open(train[0]) as img:
        assert img.format == "JPEG" and img.size == (64, 64) and img.mode == "RGB"


@pytest.mark.parametrize("split", ["train2017", "val2017"])
def test_annotations_match_label_maps(synth_root: Path, split: str) -> None:
    instances = COCO(str(coco_annotation_path(synth_root, split, "instances")))
    stuff = COCO(str(coco_annotation_path(synth_root, split, "stuff")))
    assert sorted(instances.getCatIds()) == [i + 1 for i in THING_IDS]
    assert sorted(stuff.getCatIds()) == [i + 1 for i in STUFF_IDS]
    assert instances.getImgIds() == stuff.getImgIds()
    for image_id in instances.getImgIds():
        info = instances.loadImgs(image_id)[0]
        label = load_semantic_label(semantic_label_path(synth_root, split, info["file_name"]))
        assert label.shape == (info["height"], info["width"]) and label.dtype == np.uint8
        rebuilt = np.full(label.shape, IGNORE_LABEL, np.uint8)
        coverage = np.zeros(label.shape, np.int64)
        for coco in (instances, stuff):
            for ann in coco.loadAnns(coco.getAnnIds(imgIds=image_id)):
                m = coco.annToMask(ann).astype(bool)
                assert ann["area"] == m.sum() > 0 and ann["iscrowd"] == 0
                np.testing.assert_allclose(ann["bbox"], mask_utils.toBbox(ann["segmentation"]))
                rebuilt[m] = ann["category_id"] - 1
                coverage += m
        assert coverage.max() == 1  # visible masks never overlap
        np.testing.assert_array_equal(rebuilt, label)


def test_things_occlude_in_drawing_order() -> None:
    rng = np.random.default_rng(7)
    for _ in range(20):
        image, label, segments = render_scene(rng, 64)
        assert image.shape == (64, 64, 3) and image.dtype == np.uint8
        stacked = np.stack([m for _, m in segments])
        assert (stacked.sum(0) == 1).all()  # every pixel belongs to exactly one visible segment
        for cls, m in segments:
            assert (label[m] == cls).all()
        assert {c for c, _ in segments if c in THING_IDS}  # at least one thing is visible


LUMA = np.array([0.299, 0.587, 0.114])


def _region_colours(image: np.ndarray, segments: list) -> list[np.ndarray]:
    """Mean colour of the darker and the lighter half of each segment's pixels, (2, 3) per segment."""
    out = []
    for _, m in segments:
        px = image[m].astype(np.float64)
        if len(px) < 50:
            continue
        lum = px @ LUMA
        out.append(np.stack([px[lum <= np.median(lum)].mean(0), px[lum > np.median(lum)].mean(0)]))
    return out


def test_palettes_randomise_colour_per_instance() -> None:
    """Both palettes draw a fresh colour per region/instance; muted ones are near-grey, vivid ones are not."""
    for palette, max_sat in (("muted", 0.2), ("vivid", None)):
        rng = np.random.default_rng(5)
        colours, sats = [], []
        for _ in range(12):
            image, _, segments = render_scene(rng, 96, palette)
            for dark_light in _region_colours(image, segments):
                light = dark_light[1]
                colours.append(light)
                sats.append((light.max() - light.min()) / max(light.max(), 1.0))
        colours = np.stack(colours)
        assert len(colours) > 30
        # no two regions share a colour: it is drawn per instance (pixel noise is std 3)
        dists = np.linalg.norm(colours[:, None] - colours[None], axis=-1)[np.triu_indices(len(colours), 1)]
        assert np.quantile(dists, 0.05) > 3.0
        if max_sat is not None:
            assert max(sats) < max_sat
        else:
            assert np.median(sats) > 0.3
    with pytest.raises(ValueError, match="palette"):
        render_scene(np.random.default_rng(0), 32, "neon")


def test_class_textures() -> None:
    """Each class shows its stated texture: edge directions (none, one axis, both, one diagonal), two tones."""
    rng = np.random.default_rng(2)
    stats: dict[str, list[tuple[float, ...]]] = {c.name: [] for c in CLASSES}
    for _ in range(30):
        image, label, _ = render_scene(rng, 128)
        lum = image.astype(np.float64) @ LUMA
        dx, dy = np.abs(np.diff(lum, axis=1))[:-1, 1:], np.abs(np.diff(lum, axis=0))[:, 1:-1]
        rise = np.abs(lum[1:, :-2] - lum[:-1, 1:-1])  # one step down-left: along a rising diagonal
        fall = np.abs(lum[1:, 2:] - lum[:-1, 1:-1])  # one step down-right: along a falling diagonal
        core = label[:-1, 1:-1]  # pixels whose lower three and right neighbours share their label
        same = (core == label[1:, 1:-1]) & (core == label[:-1, 2:]) & (core == label[1:, :-2]) & (core == label[1:, 2:])
        core = np.where(same, core, IGNORE_LABEL)
        for c in CLASSES:
            m = core == c.id
            if m.sum() < 200:
                continue
            region = lum[:-1, 1:-1][m]
            light = (region > region.mean()).mean()  # the two tones come in random order: take the rarer one
            diag = sorted((rise[m].mean(), fall[m].mean()))
            # the largest one-pixel step against the texture's range: ~1 at a hard edge, ~0.3 on a sinusoid
            step = max(np.quantile(dx[m], 0.99), np.quantile(dy[m], 0.99))
            hard = step / max(np.quantile(region, 0.98) - np.quantile(region, 0.02), 1e-9)
            stats[c.name].append(
                (dx[m].mean(), dy[m].mean(), min(light, 1 - light), diag[0] / max(diag[1], 1e-9), hard)
            )
    med = {k: np.median(np.array(v), axis=0) for k, v in stats.items() if v}
    assert set(med) == {c.name for c in CLASSES}
    assert med["cross"][0] < 6 and med["cross"][1] < 6  # plain: pixel noise and shading only
    assert med["stripes"][1] > 4 * med["stripes"][0]  # horizontal stripes: edges between rows
    assert med["box"][0] > 4 * med["box"][1]  # vertical stripes
    for name in ("disk", "triangle", "hatch"):  # rings, dots, diagonals: edges along both axes
        gx, gy, _, _, _ = med[name]
        assert gx > 10 and gy > 10 and 0.7 < gx / gy < 1.4, (name, gx, gy)
    assert med["hatch"][3] < 0.3  # flat along one diagonal: straight diagonal stripes
    assert med["triangle"][3] > 0.5 and med["disk"][3] > 0.5  # dots and rings turn: no flat diagonal
    for name in ("stripes", "hatch", "box"):
        assert med[name][2] > 0.35, name  # two tones, about half each
    dots = np.pi * 0.32**2 / (np.sqrt(3) / 2)  # a dot of radius 0.32 × spacing per hexagonal lattice cell
    assert abs(med["triangle"][2] - dots) < 0.05, med["triangle"]
    assert med["disk"][4] < 0.5 < med["box"][4] and med["stripes"][4] > 0.5  # soft rings: no hard edge


def test_hatch_draws_both_diagonals() -> None:
    """Hatch regions rise or fall at random, so the class looks the same after a horizontal flip."""
    rng = np.random.default_rng(4)
    unit = 1.0
    yy, xx = np.mgrid[0:64, 0:64].astype(np.float32) + 0.5
    hatch = next(c.id for c in CLASSES if c.name == "hatch")
    patterns = [synthetic._stuff_pattern(hatch, xx, yy, unit, rng) for _ in range(40)]
    kinds = {bool((p[1:, :-1] == p[:-1, 1:]).all()) for p in patterns}  # rising: constant along (+1, -1)
    assert kinds == {True, False}


def test_generation_is_deterministic(tmp_path: Path) -> None:
    generate(tmp_path / "a", num_train=4, num_val=2, size=48, seed=11, workers=1)
    # the worker count must not change a byte
    generate(tmp_path / "b", num_train=4, num_val=2, size=48, seed=11, workers=2)
    generate(tmp_path / "c", num_train=4, num_val=2, size=48, seed=12, workers=1)
    a, b, c = (_hashes(tmp_path / d) for d in "abc")
    assert a == b
    assert a.keys() == c.keys()
    images = [k for k in a if k.endswith(".jpg")]
    assert all(a[k] != c[k] for k in images)


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    assert (
        synthetic.main(
            ["--out", str(out), "--num-train", "3", "--num-val", "2", "--size", "40", "--seed", "5", "--workers", "1"]
        )
        == 0
    )
    summary = json.loads(capsys.readouterr().out)
    assert summary["train2017"]["images"] == 3 and summary["val2017"]["images"] == 2
    assert len(find_images(out, "val2017")) == 2
    with pytest.raises(SystemExit):
        synthetic.main(["--help"])
    helptext = capsys.readouterr().out
    for option in ("--out", "--num-train", "--num-val", "--size", "--seed", "--workers", "--palette"):
        assert option in helptext
    with pytest.raises(SystemExit):
        synthetic.main(["--version"])
    assert (
        capsys.readouterr().out.strip()
        == synthetic.GENERATOR_VERSION
        == json.loads((out / "synthetic.json").read_text())["version"]
    )
