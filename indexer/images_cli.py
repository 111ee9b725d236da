"""``slotcon index-images``: build an image index from the command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from core.checkpoint import CheckpointError
from core.recipes import INDEX_CROP, INDEX_RESIZE
from indexer.image_build import ImageIndexConfig, build_image_index
from indexer.image_schema import FLAT_MAX_VECTORS, INDEX_TYPE_CHOICES
from indexer.progress import COMPILE_MODES, add_compile_argument, configure_logging, exit_on_sigterm


def get_args_parser() -> argparse.ArgumentParser:
    """The parser of ``slotcon index-images``."""
    p = argparse.ArgumentParser(
        prog="slotcon index-images",
        description="build an image index: one vector per image and active prototype (no masks), streamed to "
        "disk in batches",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--checkpoint", required=True, help="checkpoint (this project's or the public release's)")
    p.add_argument("--data", required=True, help="dataset root: COCO / ImageNet layout, image folder, synthetic")
    p.add_argument("--split", default="val2017", help="split folder under the root ('' for the root itself)")
    p.add_argument("--out", required=True, help="image-index directory (replaced only when the build succeeds)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--global-vectors", action="store_true", help="also store one vector per image (all pixels)")
    p.add_argument("--resize", type=int, default=INDEX_RESIZE, help="shorter side before the centre crop")
    p.add_argument("--crop", type=int, default=INDEX_CROP, help="centre-crop size (the model's input)")
    p.add_argument("--workers", type=int, default=None, help="data-loading processes (default: spare cores only)")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument(
        "--faiss",
        default="auto",
        choices=INDEX_TYPE_CHOICES,
        help="auto = exact flat up to --flat-max vectors, IVF-PQ above",
    )
    p.add_argument("--flat-max", type=int, default=FLAT_MAX_VECTORS, help="largest vector count kept exact (auto)")
    p.add_argument("--nlist", type=int, default=None, help="IVF lists (default 4*sqrt(vectors))")
    p.add_argument("--pq-m", type=int, default=None, help="PQ sub-quantisers")
    p.add_argument("--limit", type=int, default=None, help="index only the first N images")
    p.add_argument("--jpeg-draft", action="store_true", help="decode JPEGs at reduced size where --resize allows")
    p.add_argument("--plain-inference", action="store_true", help="the full model, BN unfolded (reference path)")
    p.add_argument("--progress-file", default=None, help="JSON progress file rewritten as work goes")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_compile_argument(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``slotcon index-images``; returns the exit code (2 for bad input)."""
    args = get_args_parser().parse_args(argv)
    configure_logging()
    exit_on_sigterm()
    config = ImageIndexConfig(
        args.checkpoint, args.data, args.out, split=args.split or None, resize=args.resize, crop=args.crop,
        batch_size=args.batch_size, workers=args.workers, device=args.device, global_vectors=args.global_vectors,
        index_type=args.faiss, nlist=args.nlist, pq_m=args.pq_m, flat_max=args.flat_max, limit=args.limit,
        fused=not args.plain_inference, jpeg_draft=args.jpeg_draft, show_progress=not args.no_progress,
        progress_file=args.progress_file, compile=COMPILE_MODES[args.compile],
    )  # fmt: skip
    try:
        out = build_image_index(config)
    except (CheckpointError, FileNotFoundError, ValueError) as e:
        print(f"slotcon index-images: error: {e}", file=sys.stderr)
        return 2
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
