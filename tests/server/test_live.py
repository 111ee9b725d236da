"""A real uvicorn process (``python -m server``) on 127.0.0.1, spoken to over HTTP."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import httpx

from server.processes import Service, free_port

ROOT = Path(__file__).resolve().parents[2]


def test_uvicorn_subprocess_serves_http(make_settings, sample_jpeg):
    s = make_settings()
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT), SLOTCON_MAX_UPLOAD_BYTES="1000000")
    cmd = [
        sys.executable,
        "-m",
        "server",
        "--index",
        str(s.index),
        "--port",
        str(port),
        "--state-dir",
        str(s.state_dir),
        "--runs-dir",
        str(s.runs_dir),
        "--data-root",
        str(s.data_root),
        "--device",
        "cpu",
        "--log-level",
        "warning",
    ]
    service = Service.start("server", cmd, s.state_dir / "server.log", env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        service.wait_healthy(f"{base}/api/health", timeout_s=60)
        health = httpx.get(f"{base}/api/health", timeout=2)
        assert health.status_code == 200 and health.json()["index"]["num_images"] == 12
        with httpx.Client(base_url=base, timeout=30) as c:
            assert c.get("/api/prototypes/0/segments", params={"limit": 3}).status_code == 200
            r = c.post("/api/slots", files={"file": ("a.jpg", sample_jpeg, "image/jpeg")})
            assert r.status_code == 200 and r.json()["slots"]
            big = c.post("/api/slots", files={"file": ("big.jpg", b"\0" * 2_000_000, "image/jpeg")})
            assert big.status_code == 413 and big.json()["error"]["code"] == "upload_too_large"
            assert c.get("/api/images/0", params={"size": 32}).headers["content-type"] == "image/jpeg"
            assert c.get("/docs").status_code == 200
    finally:
        service.stop()


def test_413_on_a_chunked_body_closes_the_connection(live_server, server_index, tmp_path):
    """The server stops reading a refused body: after its 413 the connection is closed, so a client
    that keeps streaming hits a closed socket long before it has sent its 32 MiB."""
    import socket

    with live_server(
        "--index", str(server_index), "--state-dir", str(tmp_path / "state"), env={"SLOTCON_MAX_UPLOAD_BYTES": "100000"}
    ) as srv:
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=30)
        boundary = "XbOuNdArY"
        s.sendall(
            (
                f"POST /api/slots HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
                f"Content-Type: multipart/form-data; boundary={boundary}\r\n\r\n"
            ).encode()
        )
        head = f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n\r\n'.encode()
        s.sendall(b"%x\r\n%s\r\n" % (len(head), head))
        chunk, sent, answer, closed = b"\0" * 65536, 0, b"", None
        s.settimeout(0.05)
        while sent < 32 * 1024 * 1024 and closed is None:
            try:
                s.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                sent += len(chunk)
            except OSError as e:  # BrokenPipe / ConnectionReset: the server closed
                closed = type(e).__name__
                break
            try:
                data = s.recv(65536)
                if not data:
                    closed = "eof"
                answer += data
            except TimeoutError:
                pass
            except OSError as e:
                closed = type(e).__name__
        s.close()
        assert closed is not None, f"the server drained {sent} bytes of a refused body"
        assert sent < 8 * 1024 * 1024
        if answer:
            assert answer.startswith(b"HTTP/1.1 413") and b"connection: close" in answer.lower()
        assert httpx.get(f"{srv.base}/api/health", timeout=30).status_code == 200
