"""POST /api/slots: real uploads in every awkward image mode, and every bad input with its status,
code and message, each followed by a normal request that still succeeds."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from tests.server.conftest import call_asgi


def image_bytes(img: Image.Image, fmt: str = "PNG", **save) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **save)
    return buf.getvalue()


def _post(client, data: bytes, name: str = "img.png", **kwargs):
    return client.post("/api/slots", files={"file": (name, data, "application/octet-stream")}, **kwargs)


def _assert_still_serving(client, sample_jpeg):
    r = _post(client, sample_jpeg, "ok.jpg")
    assert r.status_code == 200 and r.json()["slots"]
    assert client.get("/api/health").status_code == 200


def test_slots_of_a_dataset_image_cover_the_whole_image(client, sample_jpeg):
    """The default: the whole image is segmented (no crop), so every pixel belongs to one slot."""
    r = _post(client, sample_jpeg, "a.jpg", params={"neighbors": 3})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["width"], body["height"]) == (96, 96) and body["box"] == [0, 0, 96, 96] and not body["cropped"]
    assignment = Image.open(io.BytesIO(base64.b64decode(body["assignment_png"])))
    assert assignment.mode == "P" and assignment.size == (96, 96)
    ids = np.asarray(assignment)
    overlay = Image.open(io.BytesIO(base64.b64decode(body["overlay_png"])))
    assert overlay.size == (96, 96)
    slots = body["slots"]
    assert sorted(s["prototype"] for s in slots) == sorted(np.unique(ids).tolist())
    assert sum(s["area_share"] for s in slots) == pytest.approx(1.0)
    cover = np.zeros((96, 96), dtype=np.int64)
    for s in slots:
        mask = mask_utils.decode({"size": s["rle"]["size"], "counts": s["rle"]["counts"].encode()})
        assert int(mask.sum()) == s["area"] == int((ids == s["prototype"]).sum())
        assert len(s["neighbors"]) == 3 and -1 <= s["score"] <= 1
        cover += mask
    assert (cover == 1).all()  # no unassigned border
    # The same image is in the index: its best neighbour is itself, at high similarity.
    top = max((n for s in slots for n in s["neighbors"]), key=lambda n: n["similarity"])
    assert top["segment"]["image_id"] == 0 and top["similarity"] > 0.9


def _rgb(size=(60, 40)) -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))


def _exif_rotated() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90° clockwise to display
    return image_bytes(_rgb((60, 40)), "JPEG", exif=exif)


@pytest.mark.parametrize(
    "name, data, size",
    [
        ("cmyk.jpg", image_bytes(_rgb().convert("CMYK"), "JPEG"), (60, 40)),
        (
            "sixteen.png",
            image_bytes(Image.fromarray((np.arange(2400).reshape(40, 60) * 27).astype(np.uint16)), "PNG"),
            (60, 40),
        ),
        ("palette.png", image_bytes(_rgb().convert("P", palette=Image.Palette.ADAPTIVE), "PNG"), (60, 40)),
        ("alpha.png", image_bytes(_rgb().convert("RGBA"), "PNG"), (60, 40)),
        ("gray.png", image_bytes(_rgb().convert("L"), "PNG"), (60, 40)),
        ("exif.jpg", _exif_rotated(), (40, 60)),
        ("webp.webp", image_bytes(_rgb(), "WEBP"), (60, 40)),
    ],
)
def test_image_modes_are_handled(client, name, data, size):
    r = _post(client, data, name)
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["width"], body["height"]) == size and body["slots"]
    assert Image.open(io.BytesIO(base64.b64decode(body["overlay_png"]))).mode == "RGB"


def _bomb() -> bytes:
    # 15000 × 15000 one-bit PNG: ~30 KB on the wire, 225 Mpixel decoded (above PIL's own bomb limit too).
    return image_bytes(Image.new("1", (15000, 15000)), "PNG", optimize=False)


@pytest.mark.parametrize(
    "name, data, status, code, words",
    [
        ("empty.png", b"", 400, "empty_file", "empty"),
        ("truncated.jpg", None, 400, "bad_image", "truncated"),
        ("notes.txt", b"this is not an image, just text\n" * 20, 415, "unsupported_media_type", "not an image"),
        ("big.png", image_bytes(Image.new("RGB", (2500, 2000)), "PNG"), 413, "image_too_large", "pixels"),
        ("bomb.png", _bomb(), 413, "image_too_large", "pixels"),
    ],
)
def test_bad_uploads(client, sample_jpeg, name, data, status, code, words):
    if data is None:
        full = image_bytes(_rgb((200, 150)), "JPEG", quality=95)
        data = full[: len(full) // 2]
    r = _post(client, data, name)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["code"] == code and words in err["message"] and name in err["message"]
    _assert_still_serving(client, sample_jpeg)


def test_oversized_body_rejected_from_its_declared_length(client, sample_jpeg):
    r = _post(client, b"\xff" * (3 * 1024 * 1024), "huge.jpg")
    assert r.status_code == 413
    err = r.json()["error"]
    assert err["code"] == "upload_too_large" and "exceeds the limit of" in err["message"]
    _assert_still_serving(client, sample_jpeg)


def test_oversized_body_rejected_while_streaming(client, sample_jpeg):
    """No Content-Length (chunked): the limit trips as the bytes arrive, before the body is read whole.

    Driven at the ASGI level (TestClient buffers request bodies) so we can count what the app pulled.
    """
    boundary = "XbOuNdArY"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="s.jpg"\r\n'
        "Content-Type: image/jpeg\r\n\r\n"
    ).encode()
    chunks = [head] + [b"\0" * (128 * 1024)] * 64  # 8 MiB, limit is 2 MiB
    status, body, pulled = call_asgi(
        client.app,
        "POST",
        "/api/slots",
        server=("test", 80),
        client=("test", 1),
        headers=[
            (b"host", b"testserver"),
            (b"content-type", f"multipart/form-data; boundary={boundary}".encode()),
            (b"transfer-encoding", b"chunked"),
        ],
        chunks=chunks,
    )
    assert status == 413 and body["error"]["code"] == "upload_too_large"
    assert pulled < 24  # ~2 MiB of 8 MiB read, then it stopped
    _assert_still_serving(client, sample_jpeg)


def test_missing_file_field_is_422(client, sample_jpeg):
    r = client.post("/api/slots", data={"other": "x"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request"
    assert "file" in r.json()["error"]["message"]
    _assert_still_serving(client, sample_jpeg)


def test_slots_without_index_use_the_configured_checkpoint(make_settings, tiny_checkpoint, sample_jpeg):
    from fastapi.testclient import TestClient

    from server.app import create_app

    with TestClient(create_app(make_settings(index=None, checkpoint=tiny_checkpoint))) as c:
        h = c.get("/api/health").json()
        assert h["index"] is None and h["checkpoint"]["name"] == tiny_checkpoint.name
        body = _post(c, sample_jpeg, "a.jpg").json()
        assert body["slots"] and all(s["neighbors"] == [] for s in body["slots"])
        r = c.get("/api/prototypes")
        assert r.status_code == 503 and r.json()["error"]["code"] == "no_index"
    with TestClient(create_app(make_settings(index=None))) as c:
        r = _post(c, sample_jpeg, "a.jpg")
        assert r.status_code == 503 and r.json()["error"]["code"] == "no_model"
        assert c.get("/api/health").json()["checkpoint"] is None
