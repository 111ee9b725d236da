"""Orientation as COCO stores it: images with an EXIF orientation are indexed and evaluated in their stored
pixel frame, the frame of their label maps (the release and PiCIE never apply EXIF orientation)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from core.checkpoint import load_model
from core.datasets import load_rgb
from indexer.build import build_index
from indexer.evaluate import EvalConfig, run_eval
from indexer.segments import segment_images
from indexer.store import ConceptIndex

#: EXIF orientation tag values: 3 = rotate 180° to display, 6 = rotate 90° clockwise to display.
ROTATE_180, ROTATE_90 = 3, 6


def _halves(width: int, height: int) -> np.ndarray:
    """(height, width, 3) uint8: the top half black, the bottom half white (not symmetric under 180° or 90°)."""
    img = np.zeros((height, width, 3), np.uint8)
    img[height // 2 :] = 255
    return img


def _save(path: Path, pixels: np.ndarray, orientation: int | None) -> None:
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    Image.fromarray(pixels).save(path, quality=95, exif=exif)


@pytest.fixture()
def rotated_root(tmp_path: Path) -> Path:
    """A synthetic-protocol dataset of three stored-frame images (top black, bottom white) with label maps in
    the same stored frame (top class 0, bottom class 1): one plain, one EXIF 180°, one 60×40 EXIF 90°."""
    root = tmp_path / "rotated"
    (root / "val2017").mkdir(parents=True)
    (root / "labels" / "val2017").mkdir(parents=True)
    (root / "synthetic.json").write_text(json.dumps({"classes": ["top", "bottom"]}))
    for name, (w, h), orientation in (("a", (48, 48), None), ("b", (48, 48), ROTATE_180), ("c", (60, 40), ROTATE_90)):
        _save(root / "val2017" / f"{name}.jpg", _halves(w, h), orientation)
        label = np.zeros((h, w), np.uint8)
        label[h // 2 :] = 1
        Image.fromarray(label, mode="L").save(root / "labels" / "val2017" / f"{name}.png")
    return root


def test_the_fixture_really_is_rotated(rotated_root: Path) -> None:
    """What a viewer shows differs from the stored frame (so the tests below can tell the two apart)."""
    c = rotated_root / "val2017" / "c.jpg"
    assert load_rgb(c).size == (60, 40) and load_rgb(c, upright=True).size == (40, 60)
    b = np.asarray(load_rgb(rotated_root / "val2017" / "b.jpg", upright=True))
    assert b[0].mean() > 200 and b[-1].mean() < 50  # shown upright, the white half is on top


def test_evaluation_reads_images_in_their_label_frame(rotated_root: Path) -> None:
    """k-means on RGB separates black from white perfectly, in the labels' frame: no image is skipped (the
    90° one would be, 40×60 against its 60×40 label) and none is flipped against its label (the 180° one)."""
    config = EvalConfig(None, rotated_root, "synthetic", split="val2017", resolution=32, baseline="kmeans-rgb")
    result = run_eval(config).to_dict()
    assert result["counts"]["evaluated_images"] == 3 and result["counts"]["skipped_images"] == 0
    assert result["miou"] > 0.95, result["per_class_iou"]


def test_index_keeps_the_stored_frame(rotated_root: Path, tiny_checkpoint: Path, tmp_path: Path) -> None:
    """Every image is indexed at its stored size, with its label counted, and its masks are the segments of
    its stored pixels (decoded as the release decodes: ``Image.open(path).convert("RGB")``)."""
    out = build_index(tiny_checkpoint, rotated_root, tmp_path / "ix", split="val2017", resize=64, crop=48)
    model = load_model(tiny_checkpoint)
    with ConceptIndex.open(out) as index:
        assert index.manifest.counts.skipped == 0 and index.manifest.counts.label_problems == 0
        labelled = 0
        for rec in index.images(0, 10):
            with Image.open(rec.path) as stored:
                assert (rec.width, rec.height) == stored.size
                want = segment_images(model, [stored.convert("RGB")], 64, 48)[0]
            segs = index.image_segments(rec.id)
            assert [s.prototype for s in segs] == want.prototypes.tolist()
            assert [s.rle["counts"] for s in segs] == want.rles
            np.testing.assert_allclose([s.score for s in segs], want.scores, atol=1e-5)
            for s, v in zip(segs, want.vectors, strict=True):
                np.testing.assert_allclose(index.segment_vector(s.id), v, atol=1e-5)
            labelled += sum(
                int(mask_utils.area({"size": s.rle["size"], "counts": s.rle["counts"].encode()})) for s in segs
            )
        counts = sum(sum(index.label_counts(k).values()) for k in range(index.num_prototypes))
        assert counts == labelled > 0  # every masked pixel had its label: none of the labels was refused
