"""FAISS query latency and build cost at up to 10 M segments with IVF-PQ, without holding the vectors.

    .venv/bin/python bench/query_scale.py                                  # 200 k segments, about a minute
    nice -n 10 .venv/bin/python bench/query_scale.py --segments 10000000   # 10 M segments

Segments are synthetic, laid out as an index lays them out (:mod:`indexer.vectors`): sorted by prototype, so
one prototype's segments are an id range; K random unit prototypes with a long-tailed popularity, each
segment = normalise(prototype + noise). The vectors are generated chunk by chunk from per-chunk seeds, for
training (a sample) and for adding, so at no time are more than ``--chunk`` of them in memory; the index
(``indexer.vectors.faiss_spec``/``build_faiss``: IVF lists, PQ codes, direct map) is all that grows.

Timed: the build (train + add), peak RSS (``resource.getrusage``), and p50 / p99 over ``--queries`` queries of
top-k per prototype (query = the prototype vector, restricted to its id range: ``indexer.vectors.search``
as ``ConceptIndex.search(prototype=k)``) and of neighbours (query = a stored segment's reconstructed vector,
global). Prints one JSON object with the machine.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from indexer.vectors import build_faiss, faiss_spec, search  # noqa: E402
from trainer.precision import describe_machine  # noqa: E402


class SyntheticSegments:
    """``count`` segment vectors of dimension ``dim`` in prototype order, regenerable chunk by chunk."""

    def __init__(self, count: int, k: int, dim: int, chunk: int, noise: float = 0.08, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        protos = rng.normal(size=(k, dim)).astype(np.float32)
        self.prototypes = protos / np.linalg.norm(protos, axis=1, keepdims=True)
        weights = 1.0 / np.arange(1, k + 1) ** 0.8  # Zipf-like popularity
        self.counts = rng.multinomial(count, weights / weights.sum())
        self.labels_end = np.cumsum(self.counts)  # prototype p owns ids [end[p-1], end[p])
        self.count, self.dim, self.chunk, self.noise, self.seed = count, dim, chunk, noise, seed

    def id_range(self, p: int) -> tuple[int, int]:
        """[first, end) ids of prototype ``p``."""
        return int(self.labels_end[p] - self.counts[p]), int(self.labels_end[p])

    def block(self, start: int) -> np.ndarray:
        """Vectors [start, start + chunk) (fewer at the end), the same on every call."""
        stop = min(self.count, start + self.chunk)
        ids = np.arange(start, stop)
        labels = np.searchsorted(self.labels_end, ids, side="right")
        rng = np.random.default_rng([self.seed, start])
        v = self.prototypes[labels] + rng.normal(scale=self.noise, size=(len(ids), self.dim)).astype(np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    def chunks(self) -> Iterator[np.ndarray]:
        """Every vector, in id order, one chunk at a time."""
        for start in range(0, self.count, self.chunk):
            yield self.block(start)

    def sample(self, n: int) -> np.ndarray:
        """Up to ``n`` training vectors drawn from evenly spaced chunks (every prototype's range is hit)."""
        starts = np.linspace(0, max(0, self.count - self.chunk), num=max(1, -(-n // self.chunk))).astype(np.int64)
        return np.concatenate([self.block(int(s)) for s in starts])[:n]


def percentiles(seconds: list[float]) -> dict[str, float]:
    """p50 / p99 / max in milliseconds."""
    ms = np.array(seconds) * 1e3
    return {"p50_ms": round(float(np.percentile(ms, 50)), 3), "p99_ms": round(float(np.percentile(ms, 99)), 3),
            "max_ms": round(float(ms.max()), 3)}  # fmt: skip


def run(args: argparse.Namespace) -> dict:
    """Build the index, time the queries; returns the measurements."""
    import faiss

    faiss.omp_set_num_threads(args.threads)
    data = SyntheticSegments(args.segments, args.prototypes, args.dim, args.chunk, seed=args.seed)
    spec = faiss_spec(args.faiss, args.dim, args.segments, args.nlist, args.pq_m)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t = time.perf_counter()
    index = build_faiss(spec, args.dim, data.chunks, data.sample)
    build_s = time.perf_counter() - t
    rss_build = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rng = np.random.default_rng(args.seed + 1)
    per_proto, neighbours, recalls = [], [], []
    for _ in range(args.queries):
        p = int(rng.integers(args.prototypes))
        while data.counts[p] == 0:
            p = int(rng.integers(args.prototypes))
        t = time.perf_counter()
        _, ids = search(index, data.prototypes[p], args.topk, data.id_range(p))
        per_proto.append(time.perf_counter() - t)
        lo, hi = data.id_range(p)
        assert ((ids[0] >= lo) & (ids[0] < hi) | (ids[0] == -1)).all()  # restricted to the prototype
        seg = int(rng.integers(args.segments))
        t = time.perf_counter()
        vec = index.reconstruct(seg)
        _, ids = search(index, vec, args.topk + 1)
        neighbours.append(time.perf_counter() - t)
        recalls.append(seg in set(ids[0].tolist()))
    return {
        "segments": args.segments, "dim": args.dim, "prototypes": args.prototypes, "spec": spec,
        "nprobe": faiss.extract_index_ivf(index).nprobe if spec != "Flat" else None, "topk": args.topk,
        "queries": args.queries, "build_seconds": round(build_s, 1),
        "peak_rss_mb": round(rss_build, 1), "rss_before_build_mb": round(rss_before, 1),
        "index_bytes_per_segment": round(faiss.serialize_index(index).nbytes / args.segments, 1)
        if args.segments <= 2_000_000 else None,
        "top_k_per_prototype": percentiles(per_proto), "neighbours": percentiles(neighbours),
        "neighbours_find_themselves": round(float(np.mean(recalls)), 3),
        "faiss_threads": args.threads, "chunk": args.chunk, "machine": describe_machine(),
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Parse the options, run, print JSON."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--segments", type=int, default=200_000)
    p.add_argument("--dim", type=int, default=256, help="the release's D")
    p.add_argument("--prototypes", type=int, default=256, help="K")
    p.add_argument("--faiss", default="ivfpq", choices=["flat", "ivf", "ivfpq"])
    p.add_argument("--nlist", type=int, default=None, help="default: indexer.vectors.faiss_spec's")
    p.add_argument("--pq-m", type=int, default=None)
    p.add_argument("--topk", type=int, default=20)
    p.add_argument("--queries", type=int, default=300)
    p.add_argument("--chunk", type=int, default=100_000, help="vectors generated at a time")
    p.add_argument("--threads", type=int, default=2, help="FAISS OpenMP threads")
    p.add_argument("--seed", type=int, default=0)
    print(json.dumps(run(p.parse_args(argv))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
