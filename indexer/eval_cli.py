"""``slotcon eval`` / ``python -m indexer.eval_cli``: unsupervised segmentation with Hungarian matching.

    slotcon eval --checkpoint CKPT --data data/coco --protocol cocostuff27 \\
        --curated-list Coco164kFull_Stuff_Coarse_7.txt --resolution 320 --out eval.json
    slotcon eval --checkpoint CKPT --data data/synthetic --protocol synthetic --baseline kmeans-rgb --index DIR

Prints the result JSON (scores are fractions in [0, 1]); with ``--index`` it is also stored in the index.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from core.checkpoint import CheckpointError
from core.recipes import BASELINES, EVAL_RESOLUTION
from indexer.labels import PROTOCOLS
from indexer.progress import COMPILE_MODES, add_compile_argument, configure_logging, exit_on_sigterm


def get_args_parser() -> argparse.ArgumentParser:
    """The parser of ``slotcon eval``."""
    p = argparse.ArgumentParser(
        prog="slotcon eval",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--checkpoint", default=None, help="checkpoint (optional only for --baseline kmeans-rgb)")
    p.add_argument("--data", required=True, help="dataset root (COCO + stuffthingmaps, or synthetic scenes)")
    p.add_argument("--protocol", required=True, choices=PROTOCOLS)
    p.add_argument("--split", default="val2017")
    p.add_argument("--curated-list", default=None, help="IIC's image list (Coco164kFull_Stuff_Coarse_7.txt)")
    p.add_argument("--resolution", type=int, default=EVAL_RESOLUTION, help="shorter side and centre-crop size")
    p.add_argument("--baseline", default="none", choices=BASELINES)
    p.add_argument(
        "--clusters",
        type=int,
        default=None,
        help="clusters for kmeans-rgb (default: the checkpoint's K, else the class count)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the baselines")
    p.add_argument("--index", default=None, help="store the result in this index (same checkpoint)")
    p.add_argument("--out", default=None, help="write the result JSON here")
    p.add_argument("--progress-file", default=None, help="JSON progress file rewritten as work goes")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--workers", type=int, default=None, help="data-loading processes (default: spare cores only)")
    p.add_argument("--device", default=None)
    p.add_argument("--examples", type=int, default=6, help="prediction/ground-truth pairs stored in the index")
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N images")
    p.add_argument("--full", action="store_true", help="print the whole result (default: a summary)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument(
        "--plain-inference",
        action="store_true",
        help="the full model, BN unfolded (reference path for A/B runs; same assignments)",
    )
    add_compile_argument(p)
    return p


def summary(result: dict) -> dict:
    """The headline of a result: scores in percent, per-class IoU by name, counts and protocol."""
    pct = lambda v: None if v is None else round(100 * v, 2)  # noqa: E731
    return {
        "miou_percent": pct(result["miou"]),
        "pixel_accuracy_percent": pct(result["pixel_accuracy"]),
        "many_to_one": {
            "miou_percent": pct(result["many_to_one"]["miou"]),
            "pixel_accuracy_percent": pct(result["many_to_one"]["pixel_accuracy"]),
        },
        "per_class_iou_percent": {k: pct(v) for k, v in result["per_class_iou_named"].items()},
        "baseline": result["baseline"],
        "counts": {k: v for k, v in result["counts"].items() if k != "class_pixels"},
        "protocol": result["protocol"],
        "eval_id": result.get("eval_id"),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``slotcon eval``; prints JSON and returns the exit code (2 for bad input)."""
    args = get_args_parser().parse_args(argv)
    configure_logging()
    exit_on_sigterm()
    from indexer.evaluate import EvalConfig, run_eval
    from indexer.store import IndexMismatchError, IndexNotFoundError

    config = EvalConfig(
        args.checkpoint, args.data, args.protocol, split=args.split, curated_list=args.curated_list,
        resolution=args.resolution, baseline=args.baseline, index_dir=args.index, out=args.out,
        progress_file=args.progress_file, batch_size=args.batch_size, workers=args.workers,
        device=args.device, num_examples=args.examples, clusters=args.clusters, seed=args.seed,
        limit=args.limit, show_progress=not args.no_progress, fused=not args.plain_inference,
        compile=COMPILE_MODES[args.compile],
    )  # fmt: skip
    try:
        result = run_eval(config).to_dict()
    except (CheckpointError, IndexMismatchError, IndexNotFoundError, FileNotFoundError, ValueError) as e:
        print(f"slotcon eval: error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(result if args.full else summary(result), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
