"""How much "similar segments" differ in each embedding of an index: for every live prototype,
the spread of the cosine similarities of its segments' nearest neighbours (restricted to the prototype) in
the projector space and in the encoder (pre-projector) space. Prints one JSON object.

    python bench/neighbour_spaces.py --index indexes/cpu-demo [--topk 12] [--sources 20]

A spread near zero (all similarities 0.999-1.000) means the ranking is noise; the encoder space should
spread wider.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from indexer.store import ConceptIndex  # noqa: E402
from trainer.precision import describe_machine  # noqa: E402


def spread(index: ConceptIndex, space: str, topk: int, sources: int) -> dict:
    """Per-space summary over prototypes: the neighbours' similarities (min, median, max) and their range."""
    sims, ranges = [], []
    for p in index.prototypes():
        lo, hi = index.prototype_range(p.id)
        if hi - lo < 2:
            continue
        for sid in np.linspace(lo, hi - 1, num=min(sources, hi - lo), dtype=int):
            got = [d for _, d in index.neighbors(int(sid), topk, prototype=p.id, space=space)]
            sims.extend(got)
            ranges.append(max(got) - min(got))
    a = np.asarray(sims)
    return {
        "neighbour_similarity": {"min": round(float(a.min()), 4), "median": round(float(np.median(a)), 4),
                                 "max": round(float(a.max()), 4), "p10": round(float(np.percentile(a, 10)), 4)},
        "median_range_per_query": round(float(np.median(ranges)), 4),
        "share_above_0.99": round(float((a > 0.99).mean()), 4),
        "queries": len(ranges),
    }  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--index", type=Path, required=True)
    p.add_argument("--topk", type=int, default=12)
    p.add_argument("--sources", type=int, default=20, help="query segments per prototype (spread over its ranks)")
    args = p.parse_args()
    with ConceptIndex.open(args.index) as index:
        out = {
            "index": args.index.name,
            "segments": index.num_segments,
            "spaces": {
                s: {"dim": index.space_dim(s), **spread(index, s, args.topk, args.sources)} for s in index.spaces
            },
            "machine": describe_machine(),
        }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
