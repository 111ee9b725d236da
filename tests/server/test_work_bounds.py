"""CPU per request bounded before the work starts: prototype ranges checked against K and the route's
limit without being expanded, and image files refused by their structure (JPEG scans, frames, chunks)
before any decoding, with the decode deadline as the backstop; and work that stops, on a real uvicorn:
a decode stops when its client disconnects (the server's CPU time stops growing after), and SIGTERM
stops the server within seconds while a decode is in flight. Real files throughout: a scan-bomb JPEG
built here (an ordinary 6000×6000 grey progressive header, its last scan repeated), ordinary
progressive JPEGs and animated GIFs, WebPs and APNGs that must still pass."""

from __future__ import annotations

import io
import os
import signal
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from indexer.figure import parse_prototypes, prototype_ranges
from server.app import create_app
from server.errors import ApiError
from server.guard import Budget
from server.services.image_structure import StructureLimits, check_structure
from server.services.uploads import decode_upload


def scan_bomb(repeats: int, side: int = 6000) -> bytes:
    """An ordinary ``side``² grey progressive JPEG (Pillow's scan script: 6 scans) whose last scan is
    repeated ``repeats`` more times before its end marker: each copy makes the decoder go over every
    coefficient again. 20 000 copies of its 59-byte last scan: 1.2 MB."""
    buf = io.BytesIO()
    Image.new("L", (side, side), 128).save(buf, "JPEG", progressive=True, quality=90)
    data = buf.getvalue()
    last, end = data.rfind(b"\xff\xda"), data.rfind(b"\xff\xd9")
    return data[:end] + data[last:end] * repeats + data[end:]


def encoded(img: Image.Image, fmt: str, **save) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **save)
    return buf.getvalue()


def _photo(size=(320, 240), seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 180, size[0])[None, :, None]
    return Image.fromarray((rng.random((size[1], size[0], 3)) * 70 + ramp).astype(np.uint8))


def _frames(n: int, size=(48, 32)) -> list[Image.Image]:
    return [Image.new("RGB", size, (i * 7 % 256, 80, 200 - i % 200)) for i in range(n)]


def _animated(fmt: str, n: int, **save) -> bytes:
    """``n`` of :func:`_frames` as one ``fmt`` file (frames, or a TIFF's pages)."""
    frames = _frames(n)
    return encoded(frames[0], fmt, save_all=True, append_images=frames[1:], **save)


def _post(client, data: bytes, name: str, **kwargs):
    return client.post("/api/slots", files={"file": (name, data, "application/octet-stream")}, **kwargs)


# ---------------------------------------------------------------------------------------------- ranges


def test_prototype_ranges_are_not_expanded():
    started = time.perf_counter()
    assert prototype_ranges("0-100000000,100000001") == [(0, 100_000_000), (100_000_001, 100_000_001)]
    with pytest.raises(ValueError, match="at most 32"):
        parse_prototypes("0-100000000", 2048, 32)
    with pytest.raises(ValueError, match="not in this index"):
        parse_prototypes("5,10-100000000", 2048)
    with pytest.raises(ValueError, match="listed twice"):
        parse_prototypes("0-100000000,5")
    with pytest.raises(ValueError, match="not a prototype id"):
        parse_prototypes("0-" + "9" * 40)
    assert time.perf_counter() - started < 0.5
    assert parse_prototypes("3-5,9", 16, 32) == [3, 4, 5, 9]


@pytest.mark.parametrize(
    "spec, words",
    [
        ("0-100000000", "100000001 prototypes asked for: a figure takes at most 32"),
        ("0-40", "41 prototypes asked for"),
        ("3,9", "9 not in this index (K=8"),
        ("1-3,2", "prototype 2 is listed twice"),
    ],
)
def test_figure_ranges_are_refused_before_any_work(client, spec, words):
    started = time.perf_counter()
    r = client.get("/api/figure", params={"prototypes": spec})
    assert r.status_code == 422, r.text
    assert words in r.json()["error"]["message"]
    assert time.perf_counter() - started < 2
    ok = client.get("/api/figure", params={"prototypes": "0-2", "topk": 2})
    assert ok.status_code == 200 and ok.content[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_huge_range_is_refused_without_an_index_too(make_settings):
    with TestClient(create_app(make_settings(index=None))) as client:
        r = client.get("/api/figure", params={"prototypes": "0-100000000"})
        assert r.status_code == 422 and "at most 32" in r.json()["error"]["message"]
        assert client.get("/api/figure", params={"prototypes": "0-3"}).status_code == 503  # no index to draw


def test_expensive_reads_take_a_slot_or_get_503(make_settings):
    """Figures and rendered images each take one of a bounded number of slots; a request that finds them
    all taken for the wait limit gets a 503 ``busy`` naming them, and is served once one frees up."""
    settings = make_settings(work_concurrency=1, render_concurrency=1, work_timeout_s=0.3)
    with TestClient(create_app(settings)) as client:
        runtime = client.app.state.runtime
        for slots, url in [
            (runtime.render_slots, "/api/images/0/slots"),
            (runtime.work_slots, "/api/figure?prototypes=0-1&topk=2"),
        ]:
            assert slots.acquire(timeout=1)
            try:
                r = client.get(url)
                assert r.status_code == 503 and r.json()["error"]["code"] == "busy", r.text
                assert "(all 1)" in r.json()["error"]["message"] and r.headers["retry-after"]
            finally:
                slots.release()
            assert client.get(url).status_code == 200


def test_live_server_answers_a_huge_range_and_a_scan_bomb_at_once(live_server, server_index, tmp_path):
    """What a probe sends to a real uvicorn: a huge range (a 4xx within 5 s) and a 1.2 MB scan bomb without
    an Origin (an answer within 15 s), each followed by health within 1 s."""
    import httpx

    with live_server("--index", str(server_index), "--state-dir", str(tmp_path / "state")) as srv:
        started = time.perf_counter()
        r = httpx.get(f"{srv.base}/api/figure", params={"prototypes": "0-100000000"}, timeout=5)
        assert 400 <= r.status_code < 500 and time.perf_counter() - started < 5, r.text
        assert httpx.get(f"{srv.base}/api/health", timeout=1).status_code == 200
        bomb = scan_bomb(20_000)
        started = time.perf_counter()
        r = httpx.post(f"{srv.base}/api/slots", files={"file": ("bomb.jpg", bomb, "image/jpeg")}, timeout=15)
        assert r.status_code == 413 and r.json()["error"]["code"] == "image_too_complex", r.text
        assert time.perf_counter() - started < 15
        assert httpx.get(f"{srv.base}/api/health", timeout=1).status_code == 200


# ---------------------------------------------------------------------------------------------- structure


def test_scan_bomb_upload_is_refused_before_decoding(client):
    bomb = scan_bomb(20_000)
    assert 1_100_000 < len(bomb) < 1_400_000
    started = time.perf_counter()
    r = _post(client, bomb, "bomb.jpg")  # no Origin header: a script's request
    assert time.perf_counter() - started < 15
    assert r.status_code == 413, r.text
    error = r.json()["error"]
    assert error["code"] == "image_too_complex"
    assert "more than 64 scans" in error["message"] and "SLOTCON_MAX_JPEG_SCANS" in error["message"]
    started = time.perf_counter()
    assert client.get("/api/health").status_code == 200 and time.perf_counter() - started < 1


@pytest.mark.parametrize(
    "name, data",
    [
        ("progressive.jpg", encoded(_photo(), "JPEG", progressive=True)),
        ("progressive-optimized.jpg", encoded(_photo(seed=1), "JPEG", progressive=True, optimize=True, quality=95)),
        ("progressive-grey.jpg", encoded(_photo().convert("L"), "JPEG", progressive=True)),
        ("progressive-444.jpg", encoded(_photo(), "JPEG", progressive=True, subsampling=0)),
        ("animated.gif", _animated("GIF", 120, duration=40)),
        ("animated.webp", _animated("WEBP", 40, duration=40)),
        ("animated.png", _animated("PNG", 30, duration=40)),
        ("pages.tiff", _animated("TIFF", 5)),
    ],
)
def test_ordinary_files_pass(client, name, data):
    found = check_structure(data, StructureLimits())
    assert found.format != "other"
    if name.endswith(".jpg"):
        assert 1 < found.scans <= 12  # libjpeg's progressive script: 10 scans (6 when grey)
    r = _post(client, data, name)
    assert r.status_code == 200, (name, r.text[:300])


@pytest.mark.parametrize(
    "name, data, limits, words",
    [
        ("bomb.jpg", scan_bomb(200, side=64), StructureLimits(scans=64), "more than 64 scans"),
        ("frames.gif", _animated("GIF", 30), StructureLimits(frames=20), "more than 20 frames"),
        ("frames.webp", _animated("WEBP", 30), StructureLimits(frames=20), "more than 20 frames"),
        ("frames.png", _animated("PNG", 30), StructureLimits(frames=20), "more than 20 frames"),
        ("pages.tiff", _animated("TIFF", 30), StructureLimits(frames=20), "more than 20 pages"),
    ],
)
def test_structure_beyond_the_limits_is_refused(name, data, limits, words):
    with pytest.raises(ApiError) as refused:
        decode_upload(data, 40_000_000, 128, name, limits=limits)
    assert refused.value.status_code == 413 and refused.value.code == "image_too_complex"
    assert words in refused.value.message and name in refused.value.message


def _split_idat(png: bytes, piece: int) -> bytes:
    """``png`` rewritten with its image data in IDAT chunks of ``piece`` bytes (a valid PNG)."""
    import struct
    import zlib

    chunks, pos = [], 8
    while pos < len(png):
        (length,) = struct.unpack(">I", png[pos : pos + 4])
        chunks.append((png[pos + 4 : pos + 8], png[pos + 8 : pos + 8 + length]))
        pos += 12 + length
    idat = b"".join(body for kind, body in chunks if kind == b"IDAT")

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    out = [png[:8], *(chunk(k, b) for k, b in chunks if k not in (b"IDAT", b"IEND"))]
    out += [chunk(b"IDAT", idat[i : i + piece]) for i in range(0, len(idat), piece)]
    return b"".join(out) + chunk(b"IEND", b"")


def test_png_chunks_are_counted(client):
    png = encoded(_photo((200, 150)), "PNG")
    many = _split_idat(png, 4)  # image data in chunks of 4 bytes: a valid file, refused for its chunk count
    assert check_structure(many, StructureLimits(chunks=10**6)).chunks > 10_000
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(many))), np.asarray(Image.open(io.BytesIO(png))))
    r = _post(client, many, "chunks.png")
    assert r.status_code == 413 and "more than 10000 chunks" in r.json()["error"]["message"], r.status_code
    assert _post(client, _split_idat(png, 8192), "ordinary.png").status_code == 200


def test_the_decode_deadline_stops_a_file_within_the_limits():
    """With the scan limit raised out of the way, the deadline is what stops the decode: a 2 000-scan
    file (about 50 s of decoding) ends within a second or two of its 0.3 s budget."""
    bomb = scan_bomb(2_000)
    budget = Budget("decoding bomb.jpg", 0.3)
    started = time.perf_counter()
    with pytest.raises(ApiError) as stopped:
        decode_upload(
            bomb, 40_000_000, 128, "bomb.jpg", limits=StructureLimits(scans=10**6, chunks=10**6), budget=budget
        )
    assert stopped.value.status_code == 503 and stopped.value.code == "deadline_exceeded"
    assert "0.3 s" in stopped.value.message
    assert time.perf_counter() - started < 3


def test_structure_limits_come_from_the_settings(make_settings):
    with TestClient(create_app(make_settings(max_jpeg_scans=4))) as client:
        r = _post(client, encoded(_photo(), "JPEG", progressive=True), "ten-scans.jpg")
        assert r.status_code == 413 and "more than 4 scans" in r.json()["error"]["message"]
        assert _post(client, encoded(_photo(), "JPEG"), "baseline.jpg").status_code == 200


# ---------------------------------------------------------------------------------------------- stopping

#: The structure limits raised out of a scan bomb's way: only the cancellation (or the stopping flag) can
#: end its decode, which left alone would take minutes of CPU.
LIMITS_OUT_OF_THE_WAY = {
    "SLOTCON_MAX_JPEG_SCANS": "1000000",
    "SLOTCON_MAX_IMAGE_CHUNKS": "1000000",
    "SLOTCON_DECODE_TIMEOUT_S": "600",
}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` (all its threads) from /proc, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _busy(pid: int, within_s: float = 20) -> None:
    """Wait until ``pid`` is decoding (its CPU time grows at least 0.3 s in 0.5 s)."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        before = cpu_seconds(pid)
        time.sleep(0.5)
        if cpu_seconds(pid) - before > 0.3:
            return
    raise AssertionError("the server never started decoding")


@pytest.fixture(scope="module")
def bomb() -> bytes:
    return scan_bomb(20_000)  # ~8 minutes of decoding on one core


def test_decode_stops_when_the_client_disconnects(live_server, server_index, tmp_path, bomb):
    env = LIMITS_OUT_OF_THE_WAY
    outcome: list[str] = []

    def upload(base: str) -> None:  # gives up after 3 s and closes its connection
        try:
            httpx.post(f"{base}/api/slots", files={"file": ("bomb.jpg", bomb, "image/jpeg")}, timeout=3)
            outcome.append("answered")
        except httpx.ReadTimeout:
            outcome.append("gave up")

    with live_server("--index", str(server_index), "--state-dir", str(tmp_path / "state"), env=env) as srv:
        client = threading.Thread(target=upload, args=(srv.base,))
        client.start()
        _busy(srv.pid)  # the server is decoding
        client.join(timeout=10)
        assert outcome == ["gave up"]
        time.sleep(1.0)  # one chunk of the decoder's input (at most ~1 s of this file) may still finish
        before = cpu_seconds(srv.pid)
        time.sleep(2.0)
        assert cpu_seconds(srv.pid) - before < 0.4, "the decode went on after the client left"
        started = time.perf_counter()
        assert httpx.get(f"{srv.base}/api/health", timeout=1).status_code == 200
        assert time.perf_counter() - started < 1


def test_sigterm_stops_the_server_with_a_decode_in_flight(live_server, server_index, tmp_path, bomb):
    env = LIMITS_OUT_OF_THE_WAY
    answers: list[int] = []

    def upload(base: str) -> None:
        try:
            r = httpx.post(f"{base}/api/slots", files={"file": ("bomb.jpg", bomb, "image/jpeg")}, timeout=60)
            answers.append(r.status_code)
        except httpx.HTTPError:
            answers.append(0)  # the connection closed without an answer

    with live_server("--index", str(server_index), "--state-dir", str(tmp_path / "state"), env=env) as srv:
        client = threading.Thread(target=upload, args=(srv.base,))
        client.start()
        _busy(srv.pid)
        started = time.monotonic()
        os.kill(srv.pid, signal.SIGTERM)
        assert srv.proc is not None
        code = srv.proc.wait(timeout=15)
        took = time.monotonic() - started
        client.join(timeout=10)
    assert took < 6, f"the server took {took:.1f} s to stop after SIGTERM"
    assert code is not None and answers in ([503], [0]), (code, answers)


# ---------------------------------------------------------------------------------------------- memory


def test_the_decoded_image_cache_is_bounded_by_bytes(client, monkeypatch):
    """Decoded dataset images are kept up to a byte budget (not a count of images of any size)."""
    from server.services import images

    monkeypatch.setattr(images, "CACHE_BYTES", 5 * 96 * 96 * 3)  # five of the tiny index's 96² images
    images._cache.clear()
    monkeypatch.setattr(images, "_cached_bytes", 0)
    for image_id in range(12):
        assert client.get(f"/api/images/{image_id}/slots", params={"size": 48}).status_code == 200
        assert images._cached_bytes <= images.CACHE_BYTES
    assert len(images._cache) == 5
    assert sum(im.width * im.height * 3 for im in images._cache.values()) == images._cached_bytes


def test_the_heap_is_trimmed_once_per_quiet_spell():
    """After requests end and the server stays idle, freed memory is handed back (one malloc_trim per
    quiet spell, none while a request is in flight or when nothing ran since the last one)."""
    from server.services.memory import Activity, IdleTrimmer

    activity = Activity()
    trimmer = IdleTrimmer(activity, idle_s=0.3, poll_s=0.05).start()
    try:
        time.sleep(0.5)
        assert trimmer.trims == 0  # nothing ran yet
        activity.enter()
        time.sleep(0.5)
        assert trimmer.trims == 0  # a request in flight
        activity.leave()
        time.sleep(0.7)
        assert trimmer.trims == 1
        time.sleep(0.5)
        assert trimmer.trims == 1  # still idle: nothing new to give back
    finally:
        trimmer.close()
