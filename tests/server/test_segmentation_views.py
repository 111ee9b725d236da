"""What a user sees is what the model saw: an upload with the index's crop gets exactly its index entry, an
upload by default is segmented whole, and the overlays of indexed images show the crop, never an unassigned
border; a photo with an EXIF rotation is segmented upright."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from core.checkpoint import load_model
from core.datasets import load_rgb
from indexer.segments import segment_images
from indexer.store import ConceptIndex


def _post(client, data: bytes, name: str = "img.jpg", **params):
    return client.post("/api/slots", files={"file": (name, data, "application/octet-stream")}, params=params)


def _decode(rle: dict) -> np.ndarray:
    return mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode()}).astype(bool)


def _png(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.int16)


@pytest.mark.parametrize("image_id", [0, 7])
def test_upload_with_the_index_crop_equals_its_index_entry(client, server_index, tiny_checkpoint, image_id):
    """An indexed image uploaded with ``?crop=true``: the same prototypes, scores, masks and vectors (each
    slot's nearest segment is its own index entry at similarity 1) as the index holds."""
    with ConceptIndex.open(server_index) as index:
        rec = index.image(image_id)
        entry = index.image_segments(image_id)
        vectors = {s.prototype: index.segment_vector(s.id) for s in entry}
    r = _post(client, rec.path.read_bytes(), rec.path.name, crop="true", neighbors=1)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["cropped"] and body["box"] == list(rec.crop_box)
    slots = {s["prototype"]: s for s in body["slots"]}
    assert sorted(slots) == [s.prototype for s in entry]
    for seg in entry:
        slot = slots[seg.prototype]
        assert slot["score"] == pytest.approx(seg.score, abs=1e-5)
        assert slot["rle"] == seg.rle and slot["area"] == seg.area and slot["bbox"] == list(seg.bbox)
        nearest = slot["neighbors"][0]
        assert nearest["segment"]["id"] == seg.id and nearest["similarity"] == pytest.approx(1.0, abs=1e-5)
    # the same function, called as the upload calls it, gives the index's vectors
    mine = segment_images(load_model(tiny_checkpoint), [load_rgb(rec.path, upright=True)], 128, 112)[0]
    for k, v in zip(mine.prototypes.tolist(), mine.vectors, strict=True):
        np.testing.assert_allclose(v, vectors[k], atol=1e-5)


def test_upload_default_is_whole_image_and_crop_is_outlined(client, sample_jpeg):
    whole = _post(client, sample_jpeg).json()
    assert whole["box"] == [0, 0, 96, 96] and not whole["cropped"]
    cover = sum(_decode(s["rle"]).astype(int) for s in whole["slots"])
    assert (cover == 1).all()
    cropped = _post(client, sample_jpeg, crop="true").json()
    x, y, w, h = cropped["box"]
    assert (x, y, w, h) != (0, 0, 96, 96)
    cover = sum(_decode(s["rle"]).astype(int) for s in cropped["slots"])
    assert (cover[y : y + h, x : x + w] == 1).all() and cover.sum() == w * h
    overlay = _png(base64.b64decode(cropped["overlay_png"]))
    assert (overlay[y - 1, x : x + w] == 255).all() and (overlay[y - 2, x : x + w] == 0).all()  # the outline
    plain = _png(base64.b64decode(whole["overlay_png"]))
    assert not (plain[y - 1, x : x + w] == 255).all()


def test_indexed_overlays_show_the_crop_the_model_saw(client, server_index):
    """The concept grid's tiles (segment overlays) and the all-slots view: by default the crop itself, every
    pixel of it in a segment; ``?view=full`` the whole image with the crop outlined."""
    with ConceptIndex.open(server_index) as index:
        rec = index.image(3)
        segs = index.image_segments(3)
    info = client.get("/api/images", params={"offset": 3, "limit": 1}).json()["items"][0]
    x, y, w, h = info["box"]
    assert info["box"] == list(rec.crop_box) and (w, h) != (rec.width, rec.height)
    cover = sum(_decode(s.rle).astype(int) for s in segs)
    assert (cover[y : y + h, x : x + w] == 1).all() and cover.sum() == w * h  # masks = the crop, nothing else
    for url, params in (("/api/images/3/overlay", {"segment": segs[0].id}), ("/api/images/3/slots", {})):
        crop = Image.open(io.BytesIO(client.get(url, params=params).content))
        assert crop.size == (w, h), url
        full = _png(client.get(url, params={**params, "view": "full"}).content)
        assert full.shape[:2] == (rec.height, rec.width)
        assert (full[y - 1, x : x + w] == 255).all() and (full[y + h, x : x + w] == 255).all(), url
    stored = _png(client.get("/api/images/3").content)
    slots = _png(client.get("/api/images/3/slots").content)
    changed = np.abs(slots - stored[y : y + h, x : x + w]).sum(-1) > 0
    assert changed.mean() > 0.9  # every pixel shown is tinted by its slot's colour
    assert client.get("/api/images/3/slots", params={"view": "other"}).status_code == 422


def test_an_exif_rotated_upload_is_segmented_upright(client):
    """Uploads are what their owner sees: a stored 60×40 JPEG tagged 'rotate 90°' is segmented as 40×60."""
    pixels = np.zeros((40, 60, 3), np.uint8)
    pixels[:, :30] = 255
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=95, exif=exif)
    body = _post(client, buf.getvalue()).json()
    assert (body["width"], body["height"]) == (40, 60) and body["box"] == [0, 0, 40, 60]
    assert all(s["rle"]["size"] == [60, 40] for s in body["slots"])
