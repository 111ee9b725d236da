"""Uploads equal to the index at any size: a real index built (``indexer.build``) over a 640×480 and a
4032×3024 JPEG; each uploaded with the index's preprocessing (``?crop=true``) gets its index entry: the
same prototypes, scores within 1e-4, each slot's nearest indexed segment its own at similarity 1 (the
vectors equal), and, for the COCO-size image analysed at its own size, the same masks."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image, ImageDraw
from pycocotools import mask as mask_utils

from indexer.segments import decode_rle, resized_size
from indexer.store import ConceptIndex
from server.app import create_app
from server.services.uploads import analysis_dims, decode_upload

SIZES = {"coco": (640, 480), "phone": (4032, 3024)}


def scene(width: int, height: int, seed: int) -> Image.Image:
    """A photo-like image: a smooth gradient, coloured ellipses and rectangles, fine noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([xx / width * 200, yy / height * 180, (xx + yy) / (width + height) * 160], -1)
    img = Image.fromarray((base + rng.normal(0, 6, base.shape)).clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(12):
        x0, y0 = rng.integers(0, width * 3 // 4), rng.integers(0, height * 3 // 4)
        x1, y1 = x0 + rng.integers(width // 10, width // 3), y0 + rng.integers(height // 10, height // 3)
        fill = tuple(int(c) for c in rng.integers(0, 255, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)([x0, y0, x1, y1], fill=fill)
    return img


@pytest.fixture(scope="module")
def photos_index(tiny_checkpoint, tmp_path_factory) -> tuple[Path, dict[str, bytes]]:
    """An index at the release's resize 256 / crop 224 over two JPEGs (ids in file order: coco, phone)."""
    from indexer.build import build_index

    root = tmp_path_factory.mktemp("photos")
    (root / "val2017").mkdir()
    files = {}
    for i, (name, size) in enumerate(SIZES.items()):
        buf = io.BytesIO()
        scene(*size, seed=i).save(buf, "JPEG", quality=92)
        files[name] = buf.getvalue()
        (root / "val2017" / f"{i:02d}-{name}.jpg").write_bytes(files[name])
    index = build_index(tiny_checkpoint, root, root / "index", split="val2017", resize=256, crop=224)
    return index, files


def test_analysis_keeps_the_image_or_takes_the_resize_size():
    assert analysis_dims(640, 480, 256) == (640, 480)  # a COCO image: its own size, as the index holds it
    assert analysis_dims(1024, 1024, 256) == (1024, 1024)
    assert analysis_dims(4032, 3024, 256) == resized_size(4032, 3024, 256) == (341, 256)
    assert analysis_dims(5120, 256, 256) == (5120, 256)  # 20:1, already at the resize


def test_a_large_jpeg_is_decoded_as_the_index_decodes_it(photos_index):
    """The upload's decode of the 12 MP JPEG is the whole image, converted and then resized as
    eval_transform resizes it: pixel for pixel what the index's model saw before its crop."""
    import torchvision.transforms as T

    from core.datasets import load_rgb

    _, files = photos_index
    decoded = decode_upload(files["phone"], 40_000_000, 256)
    index_view = T.Resize(256, interpolation=T.InterpolationMode.BILINEAR)(load_rgb(io.BytesIO(files["phone"])))
    assert decoded.size == (341, 256) and np.array_equal(np.asarray(decoded), np.asarray(index_view))


@pytest.mark.parametrize("name", list(SIZES))
def test_an_indexed_jpeg_uploaded_gets_its_index_entry(make_settings, photos_index, name):
    index_dir, files = photos_index
    image_id = list(SIZES).index(name)
    with ConceptIndex.open(index_dir) as ix:
        entry = {s.prototype: s for s in ix.image_segments(image_id)}
        record = ix.image(image_id)
    settings = make_settings(index=index_dir, max_upload_pixels=40_000_000, max_upload_bytes=16 << 20)
    with TestClient(create_app(settings)) as client:
        r = client.post(
            "/api/slots",
            params={"crop": "true", "neighbors": 1},
            files={"file": (f"{name}.jpg", files[name], "image/jpeg")},
        )
    assert r.status_code == 200, r.text[:300]
    body = r.json()
    width, height = SIZES[name]
    assert (body["width"], body["height"]) == analysis_dims(width, height, 256)
    slots = {s["prototype"]: s for s in body["slots"]}
    assert set(slots) == set(entry)
    for k, slot in slots.items():
        assert slot["score"] == pytest.approx(entry[k].score, abs=1e-4)
        (near,) = slot["neighbors"]  # the nearest indexed segment: this image's own, the same vector
        assert near["segment"]["id"] == entry[k].id and near["similarity"] > 1 - 1e-4
    if (width, height) == (body["width"], body["height"]):  # analysed at its own size: the index's masks
        assert list(body["box"]) == list(record.crop_box)
        for k, slot in slots.items():
            assert slot["rle"]["counts"] == entry[k].rle["counts"] and slot["area"] == entry[k].area
    else:  # at the resize's size: the index's masks seen at that size (nearest), pixel for pixel but edges
        labels = np.full((height, width), -1)
        for k, seg in entry.items():
            labels[decode_rle(seg.rle)] = k
        small = np.asarray(Image.fromarray(labels.astype(np.int32)).resize((body["width"], body["height"]), 0))
        ours = np.full_like(small, -1)
        for k, slot in slots.items():
            ours[mask_utils.decode({"size": slot["rle"]["size"], "counts": slot["rle"]["counts"].encode()}) > 0] = k
        assert (ours == small).mean() > 0.99
        overlay = Image.open(io.BytesIO(base64.b64decode(body["overlay_png"])))
        assert overlay.size == (body["width"], body["height"])
