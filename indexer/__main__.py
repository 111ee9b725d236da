"""``slotcon index`` / ``python -m indexer``: build a concept index from a checkpoint and an image set.

One process::

    slotcon index --checkpoint runs/demo/final.pth --data data/synthetic --split val2017 --out indexes/demo

Several processes on one node (images sharded by rank, rank 0 merges)::

    torchrun --nproc_per_node=4 -m indexer --checkpoint CKPT --data ROOT --out INDEX_DIR

Several nodes: the same on each node with ``--nnodes=2 --node_rank=R --master_addr=HOST``; ``--out``
must be on a filesystem every node shares.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from core.checkpoint import CheckpointError
from core.recipes import INDEX_CROP, INDEX_RESIZE, NEAR_DUPLICATE_THRESHOLD
from indexer.progress import COMPILE_MODES, add_compile_argument, configure_logging, exit_on_sigterm
from indexer.vectors import INDEX_TYPES


def get_args_parser() -> argparse.ArgumentParser:
    """The parser of ``slotcon index``."""
    p = argparse.ArgumentParser(
        prog="slotcon index",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--checkpoint", required=True, help="checkpoint (this project's or the public release's)")
    p.add_argument("--data", required=True, help="dataset root: COCO / ImageNet layout, image folder, synthetic")
    p.add_argument("--split", default="val2017", help="split folder under the root ('' for the root itself)")
    p.add_argument("--out", required=True, help="index directory (replaced only when the build succeeds)")
    p.add_argument("--resize", type=int, default=INDEX_RESIZE, help="shorter side before the centre crop")
    p.add_argument("--crop", type=int, default=INDEX_CROP, help="centre-crop size (the model's input)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="data-loading processes; None: the cores the model's threads leave spare (0 on a 2-core CPU)",
    )
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument(
        "--faiss",
        default="flat",
        choices=INDEX_TYPES,
        help="flat = exact inner product; ivf / ivfpq for millions of segments",
    )
    p.add_argument("--nlist", type=int, default=None, help="IVF lists (default 4*sqrt(segments))")
    p.add_argument("--pq-m", type=int, default=None, help="PQ sub-quantisers")
    p.add_argument(
        "--duplicate-threshold",
        type=float,
        default=NEAR_DUPLICATE_THRESHOLD,
        help="cosine above which two prototypes count as near-duplicates",
    )
    p.add_argument("--no-labels", action="store_true", help="ignore label maps (no purity)")
    p.add_argument("--limit", type=int, default=None, help="index only the first N images")
    p.add_argument("--progress-file", default=None, help="JSON progress file rewritten as work goes")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--plain-inference",
        action="store_true",
        help="the full model, BN unfolded (reference path for A/B runs; same assignments)",
    )
    p.add_argument(
        "--jpeg-draft", action="store_true", help="decode JPEGs at 1/2-1/8 size when the shorter side stays >= --resize"
    )
    p.add_argument(
        "--no-encoder-vectors",
        action="store_true",
        help="store only the projector vectors, not the segments' pooled encoder features (the pre-projector "
        "space for neighbour search; 4·C bytes per segment, C = 2048 for ResNet-50)",
    )
    add_compile_argument(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``slotcon index``; returns the exit code (2 for bad input)."""
    args = get_args_parser().parse_args(argv)
    configure_logging()
    exit_on_sigterm()
    from indexer.build import build_index  # heavy imports after argument parsing

    try:
        out = build_index(
            args.checkpoint, args.data, args.out, split=args.split or None, resize=args.resize, crop=args.crop,
            batch_size=args.batch_size, progress_file=args.progress_file, show_progress=not args.no_progress,
            workers=args.workers, device=args.device, index_type=args.faiss, nlist=args.nlist,
            pq_m=args.pq_m, duplicate_threshold=args.duplicate_threshold, use_labels=not args.no_labels,
            limit=args.limit, fused=not args.plain_inference, jpeg_draft=args.jpeg_draft,
            encoder_vectors=not args.no_encoder_vectors,
            compile=COMPILE_MODES[args.compile],
        )  # fmt: skip
    except (CheckpointError, FileNotFoundError, ValueError) as e:
        print(f"slotcon index: error: {e}", file=sys.stderr)
        return 2
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
