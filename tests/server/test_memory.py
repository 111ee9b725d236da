"""Memory per upload on a live uvicorn: thin images are refused before decoding, large ones are decoded
within the stated bound, and concurrent uploads stay under ``concurrency × per-upload bound`` above
the idle server (the peak resident set of the server process, read from /proc)."""

from __future__ import annotations

import concurrent.futures as cf
import io
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from server.services.uploads import MAX_ASPECT_RATIO, analysis_dims, decode_cost

MIB = 1024 * 1024
DECODE_BUDGET = 128 * MIB
BODY_LIMIT = 2 * MIB
CONCURRENCY = 2
#: Room for what the per-upload bound does not count: allocator slack, thread stacks, response bodies.
MARGIN = 96 * MIB


def png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def live(live_server, server_index, synthetic_root, tmp_path_factory):
    """A live server over the tiny index (resize 128) with small, known upload limits."""
    state = tmp_path_factory.mktemp("mem-state")
    env = {
        "SLOTCON_MAX_UPLOAD_BYTES": str(BODY_LIMIT),
        "SLOTCON_MAX_UPLOAD_PIXELS": str(40_000_000),
        "SLOTCON_MAX_DECODE_BYTES": str(DECODE_BUDGET),
        "SLOTCON_UPLOAD_CONCURRENCY": str(CONCURRENCY),
    }
    with live_server(
        "--index", str(server_index), "--state-dir", str(state), "--data-root", str(synthetic_root), env=env
    ) as srv:
        with httpx.Client(base_url=srv.base, timeout=120) as c:  # warm-up: first forward, allocator pools
            sample = sorted((synthetic_root / "val2017").glob("*.jpg"))[0].read_bytes()
            assert c.post("/api/slots", files={"file": ("a.jpg", sample)}).status_code == 200
        yield srv


def _post(base: str, name: str, data: bytes) -> httpx.Response:
    with httpx.Client(base_url=base, timeout=300) as c:
        return c.post("/api/slots", files={"file": (name, data, "application/octet-stream")})


def test_thin_png_is_refused_before_decoding(live):
    thin = png(Image.new("L", (40_000, 1), 128))  # 40 kpx: far under the pixel cap, 196-byte-class file
    before = live.peak_rss_mb()
    r = _post(live.base, "thin.png", thin)
    assert r.status_code == 422 and r.json()["error"]["code"] == "image_aspect_ratio"
    assert "20:1" in r.json()["error"]["message"]
    assert live.peak_rss_mb() - before < 32  # nothing was decoded, let alone resized to 10 M × 256


def test_the_thinnest_accepted_image_is_analysed_within_the_bound(live):
    r = _post(live.base, "wide.png", png(Image.new("RGB", (4000, 200), (90, 20, 200))))  # exactly 20:1
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["width"], body["height"]) == analysis_dims(4000, 200, 128) == (2560, 128)  # the resize's size
    assert body["width"] * body["height"] <= MAX_ASPECT_RATIO * 128**2 and body["width"] / body["height"] > 19


def test_concurrent_large_pngs_stay_under_the_stated_bound(live):
    """Eight 16 MP RGBA PNGs (about 64 MiB each to decode, 100 KiB on the wire) at once."""
    rng = np.random.default_rng(0)
    img = Image.new("RGBA", (4000, 4000), (30, 160, 90, 255))
    img.paste(Image.fromarray(rng.integers(0, 255, (400, 400, 4), dtype=np.uint8)), (1800, 1800))
    data = png(img)
    assert len(data) < BODY_LIMIT and decode_cost(Image.open(io.BytesIO(data))) <= DECODE_BUDGET
    idle = live.rss_mb()
    with cf.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda i: _post(live.base, f"big{i}.png", data), range(8)))
    assert [a.status_code for a in answers] == [200] * 8, answers[0].text
    assert all(a.json()["width"] == analysis_dims(4000, 4000, 128)[0] for a in answers)
    bound_mb = (CONCURRENCY * (BODY_LIMIT + DECODE_BUDGET) + MARGIN) / MIB
    grew = live.peak_rss_mb() - idle
    assert grew < bound_mb, f"peak {grew:.0f} MiB above idle, bound {bound_mb:.0f} MiB"
    # freed decodes go back to the system: the server does not keep one image per request thread
    assert live.rss_mb() - idle < DECODE_BUDGET / MIB


def test_an_image_too_costly_to_decode_is_413_before_decoding(live):
    big_webp = io.BytesIO()
    Image.new("RGB", (4000, 4000), (10, 10, 10)).save(big_webp, "WEBP")  # 16 MP × 17 B > 128 MiB
    before = live.peak_rss_mb()
    r = _post(live.base, "big.webp", big_webp.getvalue())
    assert r.status_code == 413 and r.json()["error"]["code"] == "image_too_large"
    assert "to decode" in r.json()["error"]["message"]
    assert live.peak_rss_mb() - before < 32


_MEASURE = r"""
import io, json, sys
import numpy as np
from PIL import Image
from server.services.uploads import analysis_dims, decode_cost, decode_upload, mmap_large_allocations

mmap_large_allocations()


def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024


side, out = 2000, {}
for fmt, mode in json.loads(sys.argv[1]):
    if mode == "I;16":
        img = Image.fromarray((np.arange(side * side) % 60000).astype(np.uint16).reshape(side, side))
    else:
        img = Image.new("RGB", (side, side), (200, 30, 60)).convert(mode)
    buf = io.BytesIO()
    img.save(buf, fmt, **({"progressive": True} if fmt == "JPEG" else {}))
    data = buf.getvalue()
    del img, buf
    opened = Image.open(io.BytesIO(data))
    exact = decode_cost(opened, side * side, exact=True) <= 256 << 20  # as decode_upload decides
    if fmt == "JPEG" and not exact:
        opened.draft(opened.mode, analysis_dims(side, side, 128))
    predicted = decode_cost(opened, side * side, exact=exact)
    idle = status("VmRSS")
    open("/proc/self/clear_refs", "w").write("5")  # restart the peak (VmHWM) from here
    decoded = decode_upload(data, 40_000_000, 128)
    out[f"{fmt} {mode}"] = {"predicted": predicted, "used": status("VmHWM") - idle, "size": decoded.size}
print(json.dumps(out))
"""
CASES = [
    ("PNG", "RGBA"),
    ("PNG", "P"),
    ("PNG", "I;16"),
    ("PNG", "1"),
    ("GIF", "P"),
    ("TIFF", "RGB"),
    ("BMP", "RGB"),
    ("WEBP", "RGB"),
    ("JPEG", "RGB"),
    ("JPEG", "CMYK"),
]


def test_decode_cost_covers_what_each_format_takes():
    """The prediction made from the header bounds the peak memory of the decode, for every format (a
    fresh process, so its peak resident set is this decode's)."""
    import json
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    res = subprocess.run(
        [sys.executable, "-c", _MEASURE, json.dumps(CASES)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(root)},
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    for case, m in json.loads(res.stdout.strip().splitlines()[-1]).items():
        assert tuple(m["size"]) == analysis_dims(2000, 2000, 128), case
        assert m["used"] <= m["predicted"] + 4 * MIB, (
            f"{case}: decoding took {m['used'] / MIB:.1f} MiB, predicted {m['predicted'] / MIB:.1f} MiB"
        )
        if case.split()[0] not in ("JPEG", "TIFF"):  # the prediction is not wildly loose either
            assert m["predicted"] < 3 * m["used"] + 8 * MIB, case
