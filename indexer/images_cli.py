"""``slotcon index-images``: build an image index from the command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from core.checkpoint import CheckpointError
from indexer import cli_common as cli
from indexer.image_build import ImageIndexConfig, build_image_index
from indexer.image_schema import FLAT_MAX_VECTORS, INDEX_TYPE_CHOICES

PROG = "slotcon index-images"


def get_args_parser() -> argparse.ArgumentParser:
    """The parser of ``slotcon index-images``."""
    p = cli.parser(
        PROG,
        "build an image index: one vector per image and active prototype (no masks), streamed to disk in batches",
    )
    cli.add_build_arguments(p, "image-index")
    p.add_argument("--global-vectors", action="store_true", help="also store one vector per image (all pixels)")
    cli.add_faiss_arguments(
        p, INDEX_TYPE_CHOICES, "auto", "auto = exact flat up to --flat-max vectors, IVF-PQ above", "vectors"
    )
    p.add_argument("--flat-max", type=int, default=FLAT_MAX_VECTORS, help="largest vector count kept exact (auto)")
    p.add_argument("--jpeg-draft", action="store_true", help="decode JPEGs at reduced size where --resize allows")
    cli.add_job_arguments(p, plain_inference={"help": "the full model, BN unfolded (reference path)"})
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``slotcon index-images``; returns the exit code (2 for bad input)."""
    args = cli.start_job(get_args_parser(), argv)

    def build() -> object:
        return build_image_index(ImageIndexConfig(
            args.checkpoint, args.data, args.out, split=args.split or None, resize=args.resize, crop=args.crop,
            global_vectors=args.global_vectors, index_type=args.faiss, nlist=args.nlist, pq_m=args.pq_m,
            flat_max=args.flat_max, jpeg_draft=args.jpeg_draft, **cli.job_options(args),
        ))  # fmt: skip

    return cli.print_result(PROG, build, (CheckpointError, FileNotFoundError, ValueError))


if __name__ == "__main__":
    sys.exit(main())
