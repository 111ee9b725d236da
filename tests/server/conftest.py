"""Server fixtures: a real tiny index (FAISS + SQLite, built by ``indexer.build.build_index`` from the
shared synthetic dataset and tiny checkpoint), settings in a temp directory, a live ``TestClient``, and
:class:`LiveServer`, a real ``python -m server`` (uvicorn) in a subprocess for the tests that need a
server's behaviour: free loopback port, readiness wait, the process's resident memory from /proc.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from server.app import create_app
from server.processes import Service, ServiceError, free_port
from server.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def rss_mb(pid: int, field: str = "VmHWM") -> float:
    """``VmHWM`` (peak resident set) or ``VmRSS`` (now) of ``pid``, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(field)


class LiveServer:
    """``python -m server <args>`` on 127.0.0.1:<free port>; ``with LiveServer(...) as srv: srv.base``."""

    def __init__(self, *args: str, env: dict[str, str] | None = None, timeout: float = 90) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.timeout = timeout
        self.env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
        self.cmd = [
            sys.executable,
            "-m",
            "server",
            "--port",
            str(self.port),
            "--device",
            "cpu",
            "--log-level",
            "warning",
            *args,
        ]
        self.service: Service | None = None

    def __enter__(self) -> LiveServer:
        log = Path(tempfile.mkdtemp(prefix="live-server-")) / "server.log"
        self.service = Service.start("server", self.cmd, log, env=self.env)
        try:
            self.service.wait_healthy(f"{self.base}/api/health", self.timeout)
        except ServiceError as e:
            self.__exit__()
            raise RuntimeError(str(e)) from None
        return self

    def __exit__(self, *exc: object) -> None:
        if self.service is not None:
            self.service.stop(grace_s=20)

    @property
    def proc(self) -> subprocess.Popen | None:
        """The server process (None before ``with``)."""
        return None if self.service is None else self.service.proc

    @property
    def pid(self) -> int:
        """The server's process id."""
        assert self.proc is not None
        return self.proc.pid

    def peak_rss_mb(self) -> float:
        """The server's peak resident memory so far (MiB)."""
        return rss_mb(self.pid, "VmHWM")

    def rss_mb(self) -> float:
        """The server's resident memory now (MiB)."""
        return rss_mb(self.pid, "VmRSS")


@pytest.fixture(scope="session")
def live_server() -> type[LiveServer]:
    """The :class:`LiveServer` class (``with live_server(*args, env=...) as srv``)."""
    return LiveServer


@pytest.fixture(scope="session")
def server_index(synthetic_root: Path, tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real concept index of the synthetic val split (12 images, K=8) at resize 128 / crop 112."""
    from indexer.build import build_index

    out = tmp_path_factory.mktemp("server-index") / "tiny"
    return build_index(tiny_checkpoint, synthetic_root, out, split="val2017", resize=128, crop=112)


@pytest.fixture()
def make_settings(tmp_path: Path, synthetic_root: Path, server_index: Path) -> Callable[..., Settings]:
    """Settings in a fresh temp tree (state, runs, indexes); keyword arguments override fields."""

    def make(**overrides) -> Settings:
        values = dict(
            index=server_index,
            data_root=synthetic_root,
            runs_dir=tmp_path / "runs",
            indexes_dir=tmp_path / "indexes",
            state_dir=tmp_path / "state",
            device="cpu",
            max_upload_bytes=2 * 1024 * 1024,
            max_upload_pixels=4_000_000,
            job_poll_s=0.1,
            trusted_hosts="testserver",
        )
        values.update(overrides)
        return Settings(_env_file=None, **values)

    return make


@pytest.fixture()
def client(make_settings) -> Iterator[TestClient]:
    """A TestClient on an app serving the tiny index (lifespan run: model, index and jobs loaded)."""
    with TestClient(create_app(make_settings())) as c:
        yield c


@pytest.fixture(scope="session")
def sample_jpeg(synthetic_root: Path) -> bytes:
    """The bytes of one real dataset image."""
    return sorted((synthetic_root / "val2017").glob("*.jpg"))[0].read_bytes()


#: Training-job overrides of a tiny, quick run: the suite's tiny model at 64 px, batch 8, no loader workers, one
#: thread, a log line every step and no time budget (a job's length is its epochs or max_steps).
TINY_TRAIN = {
    "arch": "resnet18",
    "width": 0.25,
    "dim_hidden": 64,
    "dim_out": 32,
    "num_prototypes": 8,
    "image_size": 64,
    "batch_size": 8,
    "workers": 0,
    "log_every": 1,
    "threads": 1,
    "budget_minutes": 0,
}


def not_running(job: dict) -> bool:
    """True once the job has ended (succeeded, failed or stopped) or is stopping."""
    return job["status"] != "running"


def wait_job(client: TestClient, job_id: int, until: Callable[[dict], bool] = not_running, timeout: float = 90) -> dict:
    """Polls ``GET /api/jobs/{job_id}`` until ``until(job)`` holds (by default: the job no longer runs); returns
    the job, or fails with the job's log tail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/api/jobs/{job_id}").json()
        if until(job):
            return job
        time.sleep(0.2)
    raise AssertionError(
        f"job {job_id} did not get there in {timeout} s: {job}\n"
        + client.get(f"/api/jobs/{job_id}/log").json()["log"][-3000:]
    )


def call_asgi(
    app: Callable,
    method: str,
    path: str,
    *,
    server: tuple[str, int],
    client: tuple[str, int],
    headers: list[tuple[bytes, bytes]],
    chunks: Sequence[bytes] = (b"",),
) -> tuple[int, dict, int]:
    """Sends one HTTP request straight to the ASGI ``app``, with no TestClient between them: the connection's
    local address is ``server`` and its peer ``client``, and the body arrives in ``chunks``, one per ``receive``;
    returns the response's status, its JSON body and how many times the app called ``receive``."""
    sent: list[dict] = []
    pulled = 0

    async def receive() -> dict:
        nonlocal pulled
        i, pulled = pulled, pulled + 1
        return {"type": "http.request", "body": chunks[i] if i < len(chunks) else b"", "more_body": i + 1 < len(chunks)}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "server": server,
        "client": client,
        "headers": headers,
    }
    asyncio.run(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = json.loads(b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body"))
    return start["status"], body, pulled
