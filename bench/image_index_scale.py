"""Image-index build time and peak memory against the image count (memory flat in the image count).

    nice -n 10 .venv/bin/python bench/image_index_scale.py --sizes 200,2000        # a quick check
    nice -n 10 .venv/bin/python bench/image_index_scale.py --sizes 2000,20000      # memory flat in the image count
    nice -n 10 .venv/bin/python bench/image_index_scale.py --sizes 2000,20000 --vector-sizes 80000,800000,3200000

Everything is made here: a random-init ResNet-18 checkpoint (``--width``, ``--dim-out``, ``--prototypes``) and
``--unique`` synthetic scenes (``core.synthetic.generate`` at ``--image-size`` px), hard-linked over and over
into one folder per size, so 20,000 images cost one small generation. Each size is built by
``indexer.image_build.build_image_index`` in a child process of its own (``--child``), which reports its peak
resident memory (``VmHWM`` of ``/proc/self/status``) both after its imports and after the build (so the
figures of different sizes do not share a process), then times ``--queries`` queries of each kind on the index
(``top_k``, ``neighbors``, ``neighbors`` within a prototype: p50 / p99 ms). DataLoader workers are 0 by
default, so the whole build (decoding included) is in the measured process. Prints one JSON object with the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return -1


def machine(threads: int) -> dict:
    """The CPU model, torch's CPU capability, the threads used and the cores."""
    import torch

    from trainer.precision import cpu_model

    return {
        "cpu_model": cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": threads,
        "cores": os.cpu_count(),
        "torch": torch.__version__,
    }


def child(args: argparse.Namespace) -> int:
    """Build one image index and print its JSON figures (run in a process of its own)."""
    import faiss
    import torch

    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    from indexer.image_build import ImageIndexConfig, build_image_index
    from indexer.image_store import ImageIndex

    hwm_imports = _status_kib("VmHWM")
    start = time.perf_counter()
    out = build_image_index(
        ImageIndexConfig(
            args.checkpoint, args.data, args.out, split="val2017", resize=args.resize, crop=args.crop,
            batch_size=args.batch_size, workers=args.workers, device="cpu", global_vectors=args.global_vectors,
            index_type=args.faiss, flat_max=args.flat_max, nlist=args.nlist,
        )
    )  # fmt: skip
    seconds = time.perf_counter() - start
    hwm_build = _status_kib("VmHWM")
    with ImageIndex.open(out) as ix:
        manifest = ix.manifest
        queries = _query_latency(ix, args.queries)
    size = sum(f.stat().st_size for f in Path(out).iterdir())
    print(
        json.dumps(
            {
                "images": manifest.counts["images"],
                "vectors": manifest.counts["vectors"],
                "faiss": manifest.faiss,
                "build_s": round(seconds, 2),
                "images_per_s": round(manifest.counts["images"] / seconds, 1),
                "peak_rss_mib_after_imports": round(hwm_imports / 1024, 1),
                "peak_rss_mib": round(hwm_build / 1024, 1),
                "peak_rss_mib_build_increment": round((hwm_build - hwm_imports) / 1024, 1),
                "ru_maxrss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                "index_bytes": size,
                "query_ms": queries,
            }
        )  # fmt: skip
    )
    return 0


def _query_latency(ix, n: int) -> dict:  # noqa: ANN001 - an indexer.image_store.ImageIndex
    """p50 / p99 milliseconds of ``n`` queries each: top-k (k = 10) of a random prototype, neighbours of a
    random vector, and neighbours within the vector's prototype (after one warm-up query of each)."""
    import numpy as np

    rng = np.random.default_rng(1)
    active = [p for p in range(ix.num_prototypes) if ix.prototype_count(p) > 0]
    vids = rng.integers(0, ix.num_vectors, n)
    kinds = {
        "top_k": lambda i: ix.top_k(active[i % len(active)], 10),
        "neighbors": lambda i: ix.neighbors(vector_id=int(vids[i]), k=10),
        "neighbors_in_prototype": lambda i: ix.neighbors(
            vector_id=int(vids[i]), k=10, prototype=ix.vector(int(vids[i])).prototype
        ),
    }
    out = {}
    for name, fn in kinds.items():
        fn(0)
        times = []
        for i in range(n):
            t = time.perf_counter()
            fn(i)
            times.append((time.perf_counter() - t) * 1000)
        out[name] = {"p50": round(float(np.percentile(times, 50)), 3), "p99": round(float(np.percentile(times, 99)), 3)}
    return out


def child_vectors(args: argparse.Namespace) -> int:
    """The FAISS stage of the build alone (``indexer.image_vectors.faiss_from_raw``, as ``build_image_index`` runs
    it) on ``--child-vectors`` synthetic unit vectors of ``--dim-out`` dimensions, written to a float32 file in
    chunks first; prints its time, spec and peak RSS (run in a process of its own)."""
    import faiss
    import numpy as np

    faiss.omp_set_num_threads(args.threads)
    from indexer.image_vectors import faiss_from_raw, vector_spec

    n, d = args.child_vectors, args.dim_out
    raw = Path(args.out)
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(args.prototypes, d)).astype(np.float32)
    with open(raw, "wb") as f:
        for start in range(0, n, 4096):  # small chunks: the generation must not set the peak measured below
            m = min(4096, n - start)
            x = centres[rng.integers(0, len(centres), m)] + rng.normal(scale=0.5, size=(m, d)).astype(np.float32)
            f.write((x / np.linalg.norm(x, axis=1, keepdims=True)).tobytes())
    del x
    hwm_before = _status_kib("VmHWM")
    spec = vector_spec(args.faiss, d, n, args.nlist, None, args.flat_max)
    start = time.perf_counter()
    index = faiss_from_raw(raw, d, spec)
    seconds = time.perf_counter() - start
    hwm = _status_kib("VmHWM")
    faiss.write_index(index, str(raw.with_suffix(".faiss")))
    print(
        json.dumps(
            {
                "vectors": n,
                "faiss": spec,
                "faiss_build_s": round(seconds, 2),
                "peak_rss_mib_before_faiss": round(hwm_before / 1024, 1),
                "peak_rss_mib": round(hwm / 1024, 1),
                "peak_rss_mib_faiss_increment": round((hwm - hwm_before) / 1024, 1),
                "faiss_file_bytes": raw.with_suffix(".faiss").stat().st_size,
            }
        )  # fmt: skip
    )
    return 0


def _make_checkpoint(path: Path, args: argparse.Namespace) -> None:
    import torch

    from core.checkpoint import save_checkpoint
    from core.model import SlotCon, SlotConConfig

    torch.manual_seed(0)
    config = SlotConConfig(arch="resnet18", width=args.width, stride16=True, dim_hidden=args.dim_hidden,
                           dim_out=args.dim_out, num_prototypes=args.prototypes)  # fmt: skip
    save_checkpoint(path, SlotCon(config), epoch=0, step=0)


def _image_folder(pool: list[Path], root: Path, n: int) -> Path:
    """``root``/val2017 holding ``n`` hard links cycling over ``pool`` (a copy where links are refused)."""
    split = root / "val2017"
    split.mkdir(parents=True)
    for i in range(n):
        src, dst = pool[i % len(pool)], split / f"{i + 1:012d}.jpg"
        try:
            os.link(src, dst)
        except OSError:
            shutil.copyfile(src, dst)
    return root


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="2000,20000", help="image counts, comma-separated")
    p.add_argument("--unique", type=int, default=500, help="distinct synthetic scenes behind the links")
    p.add_argument("--image-size", type=int, default=96, help="side of the synthetic JPEGs")
    p.add_argument("--resize", type=int, default=96, help="shorter side before the centre crop")
    p.add_argument("--crop", type=int, default=96, help="centre crop (the model input)")
    p.add_argument("--width", type=float, default=0.25, help="ResNet-18 width multiplier of the random checkpoint")
    p.add_argument("--dim-hidden", type=int, default=512)
    p.add_argument("--dim-out", type=int, default=128)
    p.add_argument("--prototypes", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--faiss", default="auto", help="index type (auto: flat up to --flat-max vectors, IVF-PQ above)")
    p.add_argument("--flat-max", type=int, default=50_000)
    p.add_argument("--nlist", type=int, default=None, help="IVF lists (default: the image index's, at most 1024)")
    # synthetic D-dim unit vectors: the FAISS stage's memory beyond the vector counts of the image counts that fit
    # in a benchmark
    p.add_argument("--vector-sizes", default="", help="FAISS stage alone on these vector counts (comma-separated)")
    p.add_argument("--global-vectors", action="store_true")
    p.add_argument("--queries", type=int, default=200, help="queries of each kind timed on each built index")
    p.add_argument("--work", default=None, help="working directory (default: a temporary one, removed)")
    # --child: one build, in its own process
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--child-vectors", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--checkpoint", help=argparse.SUPPRESS)
    p.add_argument("--data", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child_vectors:
        return child_vectors(args)
    if args.child:
        return child(args)

    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="image-index-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        from core.synthetic import generate

        t0 = time.perf_counter()
        ckpt = work / "random-r18.pth"
        _make_checkpoint(ckpt, args)
        generate(work / "pool", num_train=0, num_val=args.unique, size=args.image_size, seed=0)
        pool = sorted((work / "pool" / "val2017").glob("*.jpg"))
        setup_s = time.perf_counter() - t0
        results = []
        for n in sizes:
            data = _image_folder(pool, work / f"data-{n}", n)
            cmd = [
                sys.executable, __file__, "--child", "--checkpoint", str(ckpt), "--data", str(data),
                "--out", str(work / f"index-{n}"), "--resize", str(args.resize), "--crop", str(args.crop),
                "--batch-size", str(args.batch_size), "--workers", str(args.workers), "--threads", str(args.threads),
                "--faiss", args.faiss, "--flat-max", str(args.flat_max), "--queries", str(args.queries),
                *(["--global-vectors"] if args.global_vectors else []),
                *(["--nlist", str(args.nlist)] if args.nlist else []),
            ]  # fmt: skip
            proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
            if proc.returncode != 0:
                print(proc.stderr[-4000:], file=sys.stderr)
                return proc.returncode
            results.append({"size": n, **json.loads(proc.stdout.strip().splitlines()[-1])})
            shutil.rmtree(data)
            shutil.rmtree(work / f"index-{n}")
        vector_results = []
        for n in [int(v) for v in args.vector_sizes.split(",") if v.strip()]:
            cmd = [
                sys.executable, __file__, "--child-vectors", str(n), "--out", str(work / f"vectors-{n}.f32"),
                "--dim-out", str(args.dim_out), "--prototypes", str(args.prototypes), "--threads", str(args.threads),
                "--faiss", args.faiss, "--flat-max", str(args.flat_max),
                *(["--nlist", str(args.nlist)] if args.nlist else []),
            ]  # fmt: skip
            proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
            if proc.returncode != 0:
                print(proc.stderr[-4000:], file=sys.stderr)
                return proc.returncode
            vector_results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            for f in work.glob(f"vectors-{n}.*"):
                f.unlink()
        out = {
            "benchmark": "image_index_scale",
            "machine": machine(args.threads),
            "setup": {
                "checkpoint": f"random-init resnet18 width {args.width}, stride 16, D {args.dim_out}, "
                f"K {args.prototypes}",
                "images": f"{args.unique} synthetic {args.image_size}px JPEGs, hard-linked to each size",
                "input": f"resize {args.resize}, crop {args.crop}",
                "batch_size": args.batch_size,
                "workers": args.workers,
                "global_vectors": args.global_vectors,
                "setup_s": round(setup_s, 1),
            },
            "results": results,
            "faiss_stage_alone": vector_results,
        }
        if len(results) >= 2:
            first, last = results[0], results[-1]
            out["peak_rss_ratio_last_to_first"] = round(last["peak_rss_mib"] / first["peak_rss_mib"], 3)
            out["images_ratio_last_to_first"] = round(last["images"] / first["images"], 1)
        print(json.dumps(out, indent=2))
        return 0
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
