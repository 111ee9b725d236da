"""Load test of the REST API: a live uvicorn (``python -m server``) on 127.0.0.1, driven by async httpx.

Measures p50/p99 latency, throughput and errors for top-k segments, neighbours, overlay rendering and
uploads (POST /api/slots) at 1, 10 and 50 concurrent clients, each level bounded by a request count
and a time limit. Prints one JSON object.

Phase 1 serves an index of ~35 k segments (synthetic scenes, a half-width ResNet-18 with K=256, built
once and cached under ``--work``). Phase 2 serves a ResNet-50 (K=256, random weights: speed does not
depend on them) with no index, for the upload → slots latency at 224 px on CPU. The mixed phase runs
``--mixed-clients`` (50) clients at once over the index, each request drawn at random: 70 % reads
(top-k, neighbours, overlays), 20 % uploads of a dataset image, 10 % uploads of a
``--large-side``² RGBA PNG; it reports p50/p99 per kind and the server process's idle and peak
resident memory (``VmRSS``/``VmHWM``). ``--server-root`` runs the server from another checkout (an
older commit, for a before/after comparison); the JSON names the machine and the server's commit.

    .venv/bin/python bench/api_load.py                      # ~5 minutes on 2 cores (first run builds)
    .venv/bin/python bench/api_load.py --images 500 --requests 100 --skip-r50   # quick
    .venv/bin/python bench/api_load.py --images 500 --mixed-only [--server-root /tmp/before]
    .venv/bin/python bench/api_load.py --images 500 --mixed-only --mixed-clients 20 --mixed-seconds 30 \
        --mixed-requests 100000 --bursts 3 --idle-seconds 20     # does memory return after bursts?
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import random
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from server.processes import free_port  # noqa: E402


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


class Server:
    """``python -m server`` (from ``root``) in a subprocess on a free loopback port."""

    def __init__(self, work: Path, *args: str, root: Path = ROOT) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("SLOTCON_")}
        env["PYTHONPATH"] = str(root)
        cmd = [
            sys.executable,
            "-m",
            "server",
            "--port",
            str(self.port),
            "--state-dir",
            str(work / "state"),
            "--device",
            "cpu",
            "--log-level",
            "warning",
            *args,
        ]
        self.proc = subprocess.Popen(cmd, env=env, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def memory_mb(self) -> dict[str, float]:
        """The server process's resident memory now (``rss``) and at its peak so far (``peak``), MiB."""
        out = {}
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out["rss" if key == "VmRSS" else "peak"] = round(int(value.split()[0]) / 1024, 1)
        return out

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


async def _drive(
    base: str, draw: Callable[[random.Random], tuple[str, dict]], clients: int, requests: int, seconds: float
) -> tuple[dict[str, list[float]], dict[str, int], float]:
    """``clients`` concurrent loops, each issuing the requests ``draw(rng)`` gives (a kind and its request), until
    ``requests`` in all or ``seconds``; returns each kind's latencies (s), the errors counted by ``kind:what``
    (``what`` alone for the kind ''), and the wall time (s)."""
    latencies: dict[str, list[float]] = {}
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
                kind, request = draw(rng)
                t = time.perf_counter()
                try:
                    r = await http.request(**request)
                    failure = None if r.status_code == 200 else str(r.status_code)
                except httpx.HTTPError as e:
                    failure = type(e).__name__
                if failure is not None:
                    key = f"{kind}:{failure}" if kind else failure
                    errors[key] = errors.get(key, 0) + 1
                latencies.setdefault(kind, []).append(time.perf_counter() - t)

        started = time.perf_counter()
        await asyncio.gather(*(worker(i) for i in range(clients)))
        wall = time.perf_counter() - started
    return latencies, errors, wall


async def level(base: str, make: Callable[[random.Random], dict], clients: int, requests: int, seconds: float) -> dict:
    """``clients`` concurrent loops issuing ``make(rng)`` requests until ``requests`` or ``seconds``."""
    latencies, errors, wall = await _drive(base, lambda rng: ("", make(rng)), clients, requests, seconds)
    ms = np.array(latencies.get("", [])) * 1000
    return {
        "clients": clients,
        "requests": len(ms),
        "errors": sum(errors.values()),
        "error_kinds": errors,
        "p50_ms": round(float(np.percentile(ms, 50)), 2) if len(ms) else None,
        "p99_ms": round(float(np.percentile(ms, 99)), 2) if len(ms) else None,
        "rps": round(len(ms) / wall, 1) if wall else None,
    }


async def mixed(
    base: str,
    kinds: dict[str, tuple[float, Callable[[random.Random], dict]]],
    clients: int,
    requests: int,
    seconds: float,
) -> dict:
    """``clients`` concurrent loops, each request of a kind drawn with the kinds' weights."""
    names = list(kinds)
    weights = [kinds[n][0] for n in names]

    def draw(rng: random.Random) -> tuple[str, dict]:
        kind = rng.choices(names, weights)[0]
        return kind, kinds[kind][1](rng)

    drawn, errors, wall = await _drive(base, draw, clients, requests, seconds)
    latencies = {n: drawn.get(n, []) for n in names}
    every = np.array([x for v in latencies.values() for x in v]) * 1000

    def pct(ms: np.ndarray) -> dict:
        if not len(ms):
            return {"requests": 0}
        return {
            "requests": len(ms),
            "p50_ms": round(float(np.percentile(ms, 50)), 1),
            "p99_ms": round(float(np.percentile(ms, 99)), 1),
        }

    return {
        "clients": clients,
        **pct(every),
        "errors": sum(errors.values()),
        "error_kinds": errors,
        "rps": round(len(every) / wall, 1) if wall else None,
        "wall_s": round(wall, 1),
        "per_kind": {n: pct(np.array(v) * 1000) for n, v in latencies.items()},
    }


def machine() -> dict:
    """Where this ran: the CPU model, torch's CPU capability and threads, the cores."""
    import torch

    from trainer.precision import cpu_model

    return {
        "cpu_model": cpu_model(),
        "cpus": os.cpu_count(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }


def _commit(root: Path) -> str | None:
    try:
        return (
            subprocess.run(
                ["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10
            ).stdout.strip()
            or None
        )
    except (OSError, subprocess.SubprocessError):
        return None


def _large_png(side: int) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(1)
    img = Image.new("RGBA", (side, side), (40, 120, 200, 255))
    img.paste(Image.fromarray(rng.integers(0, 255, (side // 8, side // 8, 4), dtype=np.uint8)), (side // 3, side // 3))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _upload(data: bytes) -> Callable[[random.Random], dict]:
    return lambda rng: {
        "method": "POST",
        "url": "/api/slots",
        "params": {"neighbors": 5},
        "files": {"file": ("bench.jpg", data, "image/jpeg")},
    }


def _photo(size: int = 480) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size]
    img = np.stack([(xx * 255 // size), (yy * 255 // size), rng.integers(0, 255, (size, size))], -1)
    buf = io.BytesIO()
    Image.fromarray(img.astype(np.uint8)).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _reads(health: dict, alive: list[int]) -> dict[str, Callable[[random.Random], dict]]:
    nseg, nimg = health["num_segments"], health["num_images"]
    return {
        "topk_segments": lambda rng: {
            "method": "GET",
            "url": f"/api/prototypes/{rng.choice(alive)}/segments",
            "params": {"limit": 20},
        },
        "neighbors": lambda rng: {
            "method": "GET",
            "url": f"/api/segments/{rng.randrange(nseg)}/neighbors",
            "params": {"limit": 10},
        },
        "overlay": lambda rng: {
            "method": "GET",
            "url": f"/api/images/{rng.randrange(nimg)}/slots",
            "params": {"size": 128},
        },
    }


async def run(args: argparse.Namespace) -> dict:
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    root = Path(args.server_root).resolve() if args.server_root else ROOT
    t = time.perf_counter()
    index, r50 = build_fixtures(work, args.images)
    out: dict = {
        "fixtures_s": round(time.perf_counter() - t, 1),
        "machine": machine(),
        "server": {"root": root.name, "commit": args.server_label or _commit(root)},
    }
    levels = [int(c) for c in args.clients.split(",")]
    sample = sorted((work / f"data-{args.images}" / "val2017").glob("*.jpg"))[0]
    with Server(work, "--index", str(index), root=root) as srv:
        health = httpx.get(srv.base + "/api/health").json()["index"]
        out["index"] = {k: health[k] for k in ("num_images", "num_segments", "num_prototypes", "crop")}
        protos = httpx.get(srv.base + "/api/prototypes").json()["items"]
        alive = [p["id"] for p in protos if not p["dead"]]
        reads = _reads(health, alive)
        if not args.mixed_only:
            endpoints = {**reads, "upload_small": _upload(sample.read_bytes())}
            for name, make in endpoints.items():
                n = args.requests if not name.startswith("upload") else max(10, args.requests // 10)
                await level(srv.base, make, 4, 20, 5)  # warm-up
                out[name] = [await level(srv.base, make, c, max(n, c * 2), args.seconds) for c in levels]
        large = _large_png(args.large_side)
        kinds = {name: (0.7 / len(reads), make) for name, make in reads.items()}
        kinds["upload_small"] = (0.2, _upload(sample.read_bytes()))
        kinds["upload_large_png"] = (
            0.1,
            lambda rng: {"method": "POST", "url": "/api/slots", "files": {"file": ("large.png", large, "image/png")}},
        )
        await level(srv.base, kinds["upload_small"][1], 2, 4, 10)  # warm-up: first forward
        for _, make in kinds.values():  # and one request of each kind: every lazily loaded part is in
            await level(srv.base, make, 1, 1, 60)
        idle = srv.memory_mb()
        result = await mixed(srv.base, kinds, args.mixed_clients, args.mixed_requests, args.mixed_seconds)
        after = srv.memory_mb()
        if args.bursts > 1 or args.idle_seconds:
            out["bursts"] = await _bursts(srv, kinds, args, idle["rss"], result, after)
        out["mixed"] = {
            **result,
            "large_png": {"side": args.large_side, "bytes": len(large)},
            "server_rss_mb": {
                "idle": idle["rss"],
                "peak": after["peak"],
                "after": after["rss"],
                "peak_above_idle": round(after["peak"] - idle["rss"], 1),
            },
        }
    if not args.skip_r50 and not args.mixed_only:
        with Server(work, "--checkpoint", str(r50), root=root) as srv:
            photo = _photo()
            await level(srv.base, _upload(photo), 1, 3, 30)  # warm-up (first forward allocates)
            out["upload_r50_224"] = [
                await level(srv.base, _upload(photo), c, max(10, c * 2), args.seconds) for c in levels
            ]
    return out


async def _bursts(
    srv: Server, kinds: dict, args: argparse.Namespace, baseline: float, first: dict, first_after: dict
) -> dict:
    """Memory over ``--bursts`` mixed bursts (the first already run), each followed by ``--idle-seconds``
    of idle: the server's resident memory after each burst and after its idle time, against the baseline
    (after one warm-up request of each kind)."""
    rows = []
    for i in range(args.bursts):
        if i == 0:
            result, after = first, first_after
        else:
            result = await mixed(srv.base, kinds, args.mixed_clients, args.mixed_requests, args.mixed_seconds)
            after = srv.memory_mb()
        await asyncio.sleep(args.idle_seconds)
        idle = srv.memory_mb()
        rows.append({
            "requests": result.get("requests"), "errors": result.get("errors"), "p50_ms": result.get("p50_ms"),
            "p99_ms": result.get("p99_ms"), "rss_after_burst_mb": after["rss"], "rss_after_idle_mb": idle["rss"],
            "peak_mb": idle["peak"], "after_idle_vs_baseline": round(idle["rss"] / baseline - 1, 3),
        })  # fmt: skip
    return {"baseline_rss_mb": baseline, "idle_seconds": args.idle_seconds, "rounds": rows}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", default=str(ROOT / "artifacts" / "bench-api"), help="cache of data and index")
    p.add_argument("--images", type=int, default=4400, help="synthetic images in the index (~8 segments each)")
    p.add_argument("--requests", type=int, default=1000, help="requests per level (uploads: a tenth)")
    p.add_argument("--seconds", type=float, default=20.0, help="time limit per level")
    p.add_argument("--clients", default="1,10,50", help="concurrency levels")
    p.add_argument("--skip-r50", action="store_true", help="skip the ResNet-50 upload phase")
    p.add_argument("--mixed-only", action="store_true", help="only the mixed reads + uploads phase")
    p.add_argument("--mixed-clients", type=int, default=50, help="concurrent clients of the mixed phase")
    p.add_argument("--mixed-requests", type=int, default=600, help="requests of the mixed phase")
    p.add_argument("--mixed-seconds", type=float, default=120.0, help="time limit of the mixed phase")
    p.add_argument("--large-side", type=int, default=2000, help="side of the large RGBA PNG uploads")
    p.add_argument("--bursts", type=int, default=1, help="mixed bursts in a row (memory after each and after idle)")
    p.add_argument("--idle-seconds", type=float, default=0.0, help="idle time after each burst before memory is read")
    p.add_argument("--server-root", help="run the server from this checkout (default: this one)")
    p.add_argument("--server-label", help="what to call that checkout in the JSON (default: its git commit)")
    result = asyncio.run(run(p.parse_args(argv)))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
