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
from indexer import cli_common as cli
from indexer.vectors import INDEX_TYPES

PROG = "slotcon index"


def get_args_parser() -> argparse.ArgumentParser:
    """The parser of ``slotcon index``."""
    p = cli.parser(PROG, __doc__.split("\n\n")[0])
    cli.add_build_arguments(p, "index")
    cli.add_faiss_arguments(
        p, INDEX_TYPES, "flat", "flat = exact inner product; ivf / ivfpq for millions of segments", "segments"
    )
    cli.add_duplicate_threshold(p)
    p.add_argument("--no-labels", action="store_true", help="ignore label maps (no purity)")
    p.add_argument(
        "--jpeg-draft", action="store_true", help="decode JPEGs at 1/2-1/8 size when the shorter side stays >= --resize"
    )
    p.add_argument(
        "--no-encoder-vectors",
        action="store_true",
        help="store only the projector vectors, not the segments' pooled encoder features (the pre-projector "
        "space for neighbour search; 4·C bytes per segment, C = 2048 for ResNet-50)",
    )
    cli.add_job_arguments(
        p,
        workers={"help": "data-loading processes; None: the cores the model's threads leave spare (0 on a 2-core CPU)"},
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``slotcon index``; returns the exit code (2 for bad input)."""
    args = cli.start_job(get_args_parser(), argv)
    from indexer.build import build_index  # heavy imports after argument parsing

    def build() -> object:
        return build_index(
            args.checkpoint, args.data, args.out, split=args.split or None, resize=args.resize, crop=args.crop,
            index_type=args.faiss, nlist=args.nlist, pq_m=args.pq_m, duplicate_threshold=args.duplicate_threshold,
            use_labels=not args.no_labels, jpeg_draft=args.jpeg_draft, encoder_vectors=not args.no_encoder_vectors,
            **cli.job_options(args),
        )  # fmt: skip

    return cli.print_result(PROG, build, (CheckpointError, FileNotFoundError, ValueError))


if __name__ == "__main__":
    sys.exit(main())
