"""Indexing throughput (images/s) and peak RSS on CPU for ResNet-18 / ResNet-50 SlotCon at 224.

    .venv/bin/python bench/index_throughput.py                       # R18, R50 × 500, 2000 images
    .venv/bin/python bench/index_throughput.py --archs resnet18 --counts 100

Each (arch, count) runs in its own process (so peak RSS is that build's alone) on synthetic scenes
(160 px, generated once) with an untrained full-size model (K=256, D=256, hidden 4096): the compute
is the same as a trained one. Peak RSS must not grow with the image count beyond the stored results.
Prints one JSON object per run.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from trainer.precision import describe_machine  # noqa: E402


def worker(arch: str, count: int, data: Path, ckpt: Path, batch_size: int, workers: int, threads: int) -> dict:
    """Build one index in this process; returns the measurements."""
    import torch

    from indexer.build import build_index

    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        out = build_index(ckpt, data, Path(tmp) / "ix", split="val2017", batch_size=batch_size,
                          workers=workers, limit=count, device="cpu")  # fmt: skip
        seconds = time.perf_counter() - t
        manifest = json.loads((out / "manifest.json").read_text())
        size_mb = sum(p.stat().st_size for p in out.iterdir()) / 2**20
    return {
        "arch": arch, "images": manifest["counts"]["images"], "segments": manifest["counts"]["segments"],
        "seconds": round(seconds, 1), "images_per_s": round(manifest["counts"]["images"] / seconds, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "children_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1),
        "index_mb": round(size_mb, 1), "batch_size": batch_size, "loader_workers": workers,
        "torch_threads": threads, "resolution": 224, "machine": describe_machine(),
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; prints JSON lines."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--archs", nargs="*", default=["resnet18", "resnet50"])
    p.add_argument("--counts", nargs="*", type=int, default=[500, 2000])
    p.add_argument("--data", type=Path, default=None, help="dataset root with val2017/ (default: synthetic)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=1, help="data-loading processes")
    p.add_argument("--threads", type=int, default=2, help="torch threads")
    p.add_argument("--worker", nargs=3, metavar=("ARCH", "COUNT", "CKPT"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        arch, count, ckpt = args.worker
        print(json.dumps(worker(arch, int(count), args.data, Path(ckpt), args.batch_size, args.workers,
                                args.threads)))  # fmt: skip
        return 0

    import torch

    from core.checkpoint import save_checkpoint
    from core.model import SlotCon, SlotConConfig
    from core.synthetic import generate

    with tempfile.TemporaryDirectory() as tmp:
        data = args.data
        if data is None:
            data = Path(tmp) / "synthetic"
            generate(data, num_train=0, num_val=max(args.counts), size=160, seed=0)
        for arch in args.archs:
            torch.manual_seed(0)
            ckpt = Path(tmp) / f"{arch}.pth"
            save_checkpoint(ckpt, SlotCon(SlotConConfig(arch=arch)))
            for count in args.counts:
                cmd = [sys.executable, __file__, "--data", str(data), "--batch-size", str(args.batch_size),
                       "--workers", str(args.workers), "--threads", str(args.threads),
                       "--worker", arch, str(count), str(ckpt)]  # fmt: skip
                proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
                if proc.returncode != 0:
                    print(json.dumps({"arch": arch, "count": count, "error": proc.stderr[-2000:]}), flush=True)
                    continue
                print(proc.stdout.strip().splitlines()[-1], flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
