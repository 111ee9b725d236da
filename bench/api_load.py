"""Load test of the REST API: a live uvicorn (``python -m server``) on 127.0.0.1, driven by async httpx.

Measures p50/p99 latency, throughput and errors for top-k segments, neighbours, overlay rendering and
uploads (POST /api/slots) at 1, 10 and 50 concurrent clients, each level bounded by a request count
and a time limit. Prints one JSON object.

Phase 1 serves an index of ~35 k segments (synthetic scenes, a half-width ResNet-18 with K=256, built
once and cached under ``--work``). Phase 2 serves a ResNet-50 (K=256, random weights: speed does not
depend on them) with no index, for the upload → slots latency at 224 px on CPU.

    .venv/bin/python bench/api_load.py                      # ~5 minutes on 2 cores (first run builds)
    .venv/bin/python bench/api_load.py --images 500 --requests 100 --skip-r50   # quick
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import random
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def build_fixtures(work: Path, images: int) -> tuple[Path, Path]:
    """(index dir, R50 checkpoint) under ``work``; built once, reused while ``images`` is unchanged."""
    import torch

    from core.checkpoint import save_checkpoint
    from core.model import SlotCon, SlotConConfig
    from core.synthetic import generate
    from indexer.build import build_index

    data, index, r50 = work / f"data-{images}", work / f"index-{images}", work / "r50.pth"
    if not (data / "annotations").is_dir():
        generate(data, num_train=0, num_val=images, size=128, seed=0)
    if not (index / "manifest.json").is_file():
        torch.manual_seed(0)
        cfg = SlotConConfig(arch="resnet18", width=0.5, stride16=True, dim_hidden=256, dim_out=64, num_prototypes=256)
        save_checkpoint(work / "r18-half.pth", SlotCon(cfg))
        build_index(work / "r18-half.pth", data, index, split="val2017", resize=128, crop=128, batch_size=64)
    if not r50.is_file():
        torch.manual_seed(0)
        save_checkpoint(r50, SlotCon(SlotConConfig()))  # the release's COCO architecture: R50, K=256
    return index, r50


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``python -m server`` in a subprocess on a free loopback port."""

    def __init__(self, work: Path, *args: str) -> None:
        self.port = _port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        cmd = [sys.executable, "-m", "server", "--port", str(self.port), "--state-dir", str(work / "state"),
               "--device", "cpu", "--log-level", "warning", *args]
        self.proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def __enter__(self) -> Server:
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                if httpx.get(self.base + "/api/health", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                if self.proc.poll() is not None:
                    raise RuntimeError(self.proc.stderr.read().decode()) from None
            time.sleep(0.3)
        raise RuntimeError("server did not start in 120 s")

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=20)


async def level(base: str, make: Callable[[random.Random], dict], clients: int, requests: int,
                seconds: float) -> dict:
    """``clients`` concurrent loops issuing ``make(rng)`` requests until ``requests`` or ``seconds``."""
    latencies: list[float] = []
    errors: dict[str, int] = {}
    issued = 0
    deadline = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base, timeout=300, limits=limits) as http:

        async def worker(seed: int) -> None:
            nonlocal issued
            rng = random.Random(seed)
            while issued < requests and time.perf_counter() < deadline:
                issued += 1
                t = time.perf_counter()
                try:
                    r = await http.request(**make(rng))
                    if r.status_code != 200:
                        errors[str(r.status_code)] = errors.get(str(r.status_code), 0) + 1
                except httpx.HTTPError as e:
                    errors[type(e).__name__] = errors.get(type(e).__name__, 0) + 1
                latencies.append(time.perf_counter() - t)

        started = time.perf_counter()
        await asyncio.gather(*(worker(i) for i in range(clients)))
        wall = time.perf_counter() - started
    ms = np.array(latencies) * 1000
    return {"clients": clients, "requests": len(latencies), "errors": sum(errors.values()), "error_kinds": errors,
            "p50_ms": round(float(np.percentile(ms, 50)), 2) if len(ms) else None,
            "p99_ms": round(float(np.percentile(ms, 99)), 2) if len(ms) else None,
            "rps": round(len(latencies) / wall, 1) if wall else None}


def _upload(data: bytes) -> Callable[[random.Random], dict]:
    return lambda rng: {"method": "POST", "url": "/api/slots", "params": {"neighbors": 5},
                        "files": {"file": ("bench.jpg", data, "image/jpeg")}}


def _photo(size: int = 480) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size]
    img = np.stack([(xx * 255 // size), (yy * 255 // size), rng.integers(0, 255, (size, size))], -1)
    buf = io.BytesIO()
    Image.fromarray(img.astype(np.uint8)).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


async def run(args: argparse.Namespace) -> dict:
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    index, r50 = build_fixtures(work, args.images)
    out: dict = {"fixtures_s": round(time.perf_counter() - t, 1), "machine": {"cpus": os.cpu_count()}}
    levels = [int(c) for c in args.clients.split(",")]
    with Server(work, "--index", str(index)) as srv:
        health = httpx.get(srv.base + "/api/health").json()["index"]
        out["index"] = {k: health[k] for k in ("num_images", "num_segments", "num_prototypes", "crop")}
        protos = httpx.get(srv.base + "/api/prototypes").json()["items"]
        alive = [p["id"] for p in protos if not p["dead"]]
        nseg, nimg = health["num_segments"], health["num_images"]
        sample = sorted((work / f"data-{args.images}" / "val2017").glob("*.jpg"))[0]
        endpoints: dict[str, Callable[[random.Random], dict]] = {
            "topk_segments": lambda rng: {"method": "GET", "url": f"/api/prototypes/{rng.choice(alive)}/segments",
                                          "params": {"limit": 20}},
            "neighbors": lambda rng: {"method": "GET", "url": f"/api/segments/{rng.randrange(nseg)}/neighbors",
                                      "params": {"limit": 10}},
            "overlay": lambda rng: {"method": "GET", "url": f"/api/images/{rng.randrange(nimg)}/slots",
                                    "params": {"size": 128}},
            "upload_small": _upload(sample.read_bytes()),
        }
        for name, make in endpoints.items():
            n = args.requests if not name.startswith("upload") else max(10, args.requests // 10)
            await level(srv.base, make, 4, 20, 5)  # warm-up
            out[name] = [await level(srv.base, make, c, max(n, c * 2), args.seconds) for c in levels]
    if not args.skip_r50:
        with Server(work, "--checkpoint", str(r50)) as srv:
            photo = _photo()
            await level(srv.base, _upload(photo), 1, 3, 30)  # warm-up (first forward allocates)
            out["upload_r50_224"] = [await level(srv.base, _upload(photo), c, max(10, c * 2), args.seconds)
                                     for c in levels]
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", default=str(ROOT / "artifacts" / "bench-api"), help="cache of data and index")
    p.add_argument("--images", type=int, default=4400, help="synthetic images in the index (~8 segments each)")
    p.add_argument("--requests", type=int, default=1000, help="requests per level (uploads: a tenth)")
    p.add_argument("--seconds", type=float, default=20.0, help="time limit per level")
    p.add_argument("--clients", default="1,10,50", help="concurrency levels")
    p.add_argument("--skip-r50", action="store_true", help="skip the ResNet-50 upload phase")
    result = asyncio.run(run(p.parse_args(argv)))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
