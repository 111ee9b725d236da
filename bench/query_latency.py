"""Latency of ConceptIndex queries (p50 / p99) at COCO-val scale and at millions of segments.

    .venv/bin/python bench/query_latency.py                      # 35k (flat) and 2M (IVF) segments
    .venv/bin/python bench/query_latency.py --segments 35000 --faiss flat

Builds a synthetic index (random unit prototypes, segment vectors = prototype + noise, prototype
popularity with a long tail), in the real layout (SQLite + FAISS via indexer.vectors), then times
top-k per prototype (random page), nearest segments to a segment (global and within its prototype)
and nearest segments to a vector. Prints one JSON object per size.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from indexer import schema  # noqa: E402
from indexer.progress import write_json_atomic  # noqa: E402
from indexer.stats import compute_stats, fill_prototypes, store_stats  # noqa: E402
from indexer.store import ConceptIndex  # noqa: E402
from indexer.vectors import build_faiss, faiss_spec  # noqa: E402
from trainer.precision import describe_machine  # noqa: E402


def synthetic_index(
    out: Path,
    num_segments: int,
    k: int = 256,
    dim: int = 256,
    index_type: str = "flat",
    seed: int = 0,
    segments_per_image: int = 7,
) -> tuple[Path, dict]:
    """Write an index of synthetic segments under ``out``; returns (out, build timings)."""
    rng = np.random.default_rng(seed)
    timings = {}
    t = time.perf_counter()
    protos = rng.normal(size=(k, dim)).astype(np.float32)
    protos /= np.linalg.norm(protos, axis=1, keepdims=True)
    popularity = 1.0 / np.arange(1, k + 1) ** 1.1  # long tail
    popularity[-k // 8 :] = 0  # dead prototypes
    assigned = np.sort(rng.choice(k, size=num_segments, p=popularity / popularity.sum()))
    vectors = np.empty((num_segments, dim), np.float32)
    scores = np.empty(num_segments, np.float32)
    for start in range(0, num_segments, 200_000):
        sl = slice(start, start + 200_000)
        v = protos[assigned[sl]] + rng.normal(scale=0.08, size=(len(assigned[sl]), dim)).astype(np.float32)
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        vectors[sl], scores[sl] = v, (v * protos[assigned[sl]]).sum(1)
    order = np.lexsort((-scores, assigned))  # by prototype, then score descending
    assigned, vectors, scores = assigned[order], vectors[order], scores[order]
    num_images = max(1, num_segments // segments_per_image)
    image_ids = rng.integers(0, num_images, size=num_segments)
    timings["vectors_s"] = time.perf_counter() - t

    t = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    conn = schema.create(out / schema.DB_NAME, schema.INDEX_SCHEMA)
    conn.executemany(
        "INSERT INTO images VALUES (?,?,?,?,?,?,?,?,?)",
        ((i, f"val2017/{i:012d}.jpg", 640, 480, 105, 25, 430, 430, segments_per_image) for i in range(num_images)),
    )
    first = np.searchsorted(assigned, np.arange(k))
    rows = ((i, int(image_ids[i]), int(assigned[i]), float(scores[i]), 5000, 6, 10, 10, 60, 60, "Xd3h0",
             int(i - first[assigned[i]])) for i in range(num_segments))  # fmt: skip
    conn.executemany("INSERT INTO segments VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", rows)
    conn.commit()
    fill_prototypes(conn, k)
    store_stats(conn, compute_stats(conn, protos))
    conn.close()
    timings["sqlite_s"] = time.perf_counter() - t

    t = time.perf_counter()
    spec = faiss_spec(index_type, dim, num_segments)

    def chunks():
        for s in range(0, num_segments, 65536):
            yield vectors[s : s + 65536]

    def sample(n: int) -> np.ndarray:
        return vectors[np.sort(rng.choice(num_segments, size=min(n, num_segments), replace=False))]

    faiss.write_index(build_faiss(spec, dim, chunks, sample), str(out / schema.FAISS_NAME))
    timings["faiss_s"] = time.perf_counter() - t
    np.save(out / schema.PROTOTYPES_NAME, protos)
    write_json_atomic(out / schema.MANIFEST_NAME, {
        "version": schema.INDEX_VERSION, "checkpoint": {"path": "synthetic", "sha256": "0" * 64},
        "data": {"root": "/nonexistent", "split": "val2017"}, "resize": 256, "crop": 224, "dim": dim,
        "num_prototypes": k, "faiss": {"type": index_type, "spec": spec},
        "counts": {"images": num_images, "segments": num_segments, "skipped": 0}, "labels": None,
    })  # fmt: skip
    return out, {key: round(v, 2) for key, v in timings.items()} | {"faiss_spec": spec}


def _percentiles(samples: list[float]) -> dict[str, float]:
    ms = np.array(samples) * 1000
    return {
        "p50_ms": round(float(np.percentile(ms, 50)), 3),
        "p99_ms": round(float(np.percentile(ms, 99)), 3),
        "max_ms": round(float(ms.max()), 3),
        "n": len(ms),
    }


def time_queries(index: ConceptIndex, n: int = 500, seed: int = 1) -> dict[str, dict[str, float]]:
    """p50/p99 of each query kind over ``n`` random queries."""
    rng = np.random.default_rng(seed)
    alive = [p for p in index.prototypes() if not p.dead]
    weights = np.array([p.num_segments for p in alive], float)
    results: dict[str, list[float]] = {
        "top_segments": [],
        "neighbors": [],
        "neighbors_in_prototype": [],
        "search_vector": [],
    }
    for _ in range(n):
        p = alive[rng.choice(len(alive), p=weights / weights.sum())]
        offset = int(rng.integers(0, max(1, p.num_segments - 20)))
        sid = int(rng.integers(0, index.num_segments))
        vec = rng.normal(size=index.dim)
        calls = (
            ("top_segments", index.top_segments, (p.id, offset, 20), {}),
            ("neighbors", index.neighbors, (sid, 10), {}),
            ("neighbors_in_prototype", index.neighbors, (sid, 10), {"prototype": index.segment(sid).prototype}),
            ("search_vector", index.search, (vec, 10), {}),
        )
        for name, fn, fargs, kwargs in calls:
            t = time.perf_counter()
            fn(*fargs, **kwargs)
            results[name].append(time.perf_counter() - t)
    return {name: _percentiles(v) for name, v in results.items()}


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; prints JSON lines."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--segments", type=int, nargs="*", default=[35_000, 2_000_000])
    p.add_argument("--faiss", default=None, help="flat / ivf / ivfpq (default: flat below 1M segments, else ivf)")
    p.add_argument("--queries", type=int, default=500)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    faiss.omp_set_num_threads(args.threads)
    for n in args.segments:
        index_type = args.faiss or ("flat" if n < 1_000_000 else "ivf")
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            out, timings = synthetic_index(Path(tmp) / "ix", n, index_type=index_type)
            build_s = time.perf_counter() - t
            with ConceptIndex.open(out) as index:
                index.top_segments(0, 0, 20)  # warm-up
                lat = time_queries(index, args.queries)
            print(
                json.dumps(
                    {
                        "segments": n,
                        "faiss": timings.pop("faiss_spec"),
                        "build_s": round(build_s, 1),
                        "build_breakdown": timings,
                        "latency": lat,
                        "machine": {**describe_machine(), "faiss_threads": args.threads},
                    }
                ),
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
