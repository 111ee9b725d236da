"""``slotcon eval`` / ``python -m indexer.eval_cli``: unsupervised segmentation with Hungarian matching.

    slotcon eval --checkpoint CKPT --data data/coco --protocol cocostuff27 --out eval.json
    slotcon eval --checkpoint CKPT --data data/synthetic --protocol synthetic --baseline kmeans-rgb --index DIR

``--protocol cocostuff27`` scores the 2,175 curated val2017 images shipped in ``indexer/data/`` at 320 px
(``--all-images`` or ``--curated-list FILE`` for others). Prints the result JSON (scores are fractions in
[0, 1], each with the tag of how it was measured; docs/evaluation.md); with ``--index`` it is also stored
in the index.

    slotcon eval --index DIR --metric object-discovery --metric dissection

``--metric object-discovery`` adds FG-ARI and mBO of the slots against the instance masks, ``--metric
dissection`` every prototype's IoU with every class (docs/evaluation.md); with ``--index`` and no
``--checkpoint`` / ``--data`` / ``--protocol``, the index's model, images and labels are used.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from core.checkpoint import CheckpointError
from core.recipes import BASELINES, EVAL_RESOLUTION
from indexer import cli_common as cli
from indexer.evaluate_objects import DISSECTION_THRESHOLD, METRICS
from indexer.evaluate_tag import EVAL_SEEDS, differences_text
from indexer.labels import PROTOCOLS

PROG = "slotcon eval"


def get_args_parser() -> argparse.ArgumentParser:
    """The parser of ``slotcon eval``."""
    p = cli.parser(PROG, __doc__.split("\n\n")[0])
    p.add_argument(
        "--checkpoint",
        default=None,
        help="checkpoint (default with --index: the index's; optional only for --baseline kmeans-rgb)",
    )
    p.add_argument(
        "--data",
        default=None,
        help="dataset root (COCO + stuffthingmaps, or synthetic scenes; default with --index: the index's)",
    )
    p.add_argument("--protocol", default=None, choices=PROTOCOLS, help="labels (default with --index: the index's)")
    p.add_argument("--split", default=None, help="image split (default: the index's with --index, else val2017)")
    p.add_argument(
        "--metric",
        action="append",
        choices=METRICS,
        default=None,
        help="what to score, repeatable (default: segmentation): the semantic scores are always computed; "
        "object-discovery adds FG-ARI and mBO against DATA/annotations/instances_SPLIT.json, dissection every "
        "prototype's IoU with every class",
    )
    p.add_argument(
        "--dissection-threshold",
        type=float,
        default=DISSECTION_THRESHOLD,
        help="a class is found when some prototype's IoU with it is above this",
    )
    images = p.add_mutually_exclusive_group()
    images.add_argument(
        "--curated-list",
        default=None,
        help="score only the images of this list (one id or file name a line); default for cocostuff27 on "
        "val2017: the shipped 2,175-image list (indexer/data/cocostuff27_curated_val2017.txt)",
    )
    images.add_argument("--all-images", action="store_true", help="score every image of the split, no list")
    p.add_argument("--resolution", type=int, default=EVAL_RESOLUTION, help="shorter side and centre-crop size")
    p.add_argument("--baseline", default="none", choices=BASELINES)
    p.add_argument(
        "--clusters",
        type=int,
        default=None,
        help="clusters for kmeans-rgb (default: the checkpoint's K, else the class count)",
    )
    p.add_argument("--seed", type=int, default=0, help="first seed of the baselines and the cluster probe")
    p.add_argument(
        "--seeds",
        type=int,
        default=EVAL_SEEDS,
        help="runs of the k-means baseline and the cluster probe (seeds --seed, --seed+1, ...): mean ± std",
    )
    p.add_argument(
        "--no-probe", action="store_true", help="skip the cluster probe (run when K differs from the class count)"
    )
    p.add_argument(
        "--crf",
        action="store_true",
        help="dense CRF on the model's maps before matching (STEGO's run_crf; tagged; needs pydensecrf2: "
        "pip install -e '.[crf]')",
    )
    p.add_argument("--index", default=None, help="store the result in this index (same checkpoint)")
    p.add_argument("--out", default=None, help="write the result JSON here")
    p.add_argument("--examples", type=int, default=6, help="prediction/ground-truth pairs stored in the index")
    p.add_argument("--full", action="store_true", help="print the whole result (default: a summary)")
    cli.add_job_arguments(
        p,
        batch_size={"default": 16},
        device={"help": None},
        limit={"help": "evaluate only the first N images"},
        no_progress={"help": None},
    )
    return p


def _pct(v: float | None) -> float | None:
    return None if v is None else round(100 * v, 2)


def score_summary(score: dict) -> dict:
    """One score of ``scores`` in percent (``± std`` for several seeds), its tag and the paper check."""
    from indexer.types import ReferenceCheck

    return {
        "method": score["method"],
        "matching": score["matching"],
        "miou_percent": _pct(score["miou"]),
        "miou_std_percent": _pct(score["miou_std"]),
        "pixel_accuracy_percent": _pct(score["pixel_accuracy"]),
        "pixel_accuracy_std_percent": _pct(score["pixel_accuracy_std"]),
        "tag": score["tag"],
        "paper": differences_text(ReferenceCheck.from_dict(score["paper"])),
    }


def objects_summary(found: dict) -> dict:
    """The object-discovery scores (fractions) and counts with the tag, and the best and worst images by
    name and score (their maps left out)."""
    drop = ("slots_png", "instances_png")
    keep = {k: v for k, v in found.items() if k not in ("best", "worst")}
    for side in ("best", "worst"):
        keep[side] = [{k: v for k, v in ex.items() if k not in drop} for ex in found[side]]
    return keep


def summary(result: dict) -> dict:
    """The headline of a result: scores in percent, the scores side by side with their tags, per-class IoU
    by name, counts and protocol; ``object_discovery`` and ``dissection`` when measured."""
    extra = {}
    if result.get("object_discovery"):
        extra["object_discovery"] = objects_summary(result["object_discovery"])
    if result.get("dissection"):
        extra["dissection"] = result["dissection"]
    return {
        "miou_percent": _pct(result["miou"]),
        "pixel_accuracy_percent": _pct(result["pixel_accuracy"]),
        "tag": result["tag"]["label"],
        "many_to_one": {
            "miou_percent": _pct(result["many_to_one"]["miou"]),
            "pixel_accuracy_percent": _pct(result["many_to_one"]["pixel_accuracy"]),
        },
        "scores": [score_summary(s) for s in result["scores"]],
        "per_class_iou_percent": {k: _pct(v) for k, v in result["per_class_iou_named"].items()},
        "baseline": result["baseline"],
        "counts": {k: v for k, v in result["counts"].items() if k != "class_pixels"},
        "image_list": result["image_list"],
        "missing_images": result["missing_images"],
        "protocol": result["protocol"],
        "eval_id": result.get("eval_id"),
        "metrics": result.get("metrics", ["segmentation"]),
        **extra,
    }


def _from_index(args: argparse.Namespace) -> None:
    """Fills ``--checkpoint``, ``--data``, ``--split`` and ``--protocol`` left out from the manifest of
    ``--index`` (the index's model on its images); ValueError when one is still missing."""
    if args.index is not None and None in (args.checkpoint, args.data, args.protocol, args.split):
        from indexer.store import ConceptIndex

        with ConceptIndex.open(args.index) as index:
            manifest = index.manifest
        if args.checkpoint is None and args.baseline != "kmeans-rgb":
            args.checkpoint = manifest.checkpoint.path
        if args.data is None:
            args.data, args.split = manifest.data.root, args.split or manifest.data.split
        if args.protocol is None and manifest.labels is not None:
            args.protocol = manifest.labels.protocol
    args.split = args.split or "val2017"
    if args.data is None:
        raise ValueError("--data is required (or --index, whose images are then used)")
    if args.protocol is None:
        raise ValueError("--protocol is required (or --index of an index built with labels)")


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``slotcon eval``; prints JSON and returns the exit code (2 for bad input)."""
    args = cli.start_job(get_args_parser(), argv)
    from indexer.evaluate import EvalConfig, run_eval
    from indexer.store import IndexMismatchError, IndexNotFoundError
    from indexer.unsupervised_crf import CrfUnavailableError

    try:
        _from_index(args)
        job = cli.job_options(args)
    except (OSError, ValueError, KeyError, TypeError) as e:
        return cli.fail(PROG, e)
    config = EvalConfig(
        args.checkpoint, args.data, args.protocol, split=args.split, curated_list=args.curated_list,
        all_images=args.all_images, resolution=args.resolution, baseline=args.baseline, index_dir=args.index,
        out=args.out, num_examples=args.examples, clusters=args.clusters, seed=args.seed, seeds=args.seeds,
        probe=not args.no_probe, crf=args.crf, metrics=tuple(args.metric or ("segmentation",)),
        dissection_threshold=args.dissection_threshold, **job,
    )  # fmt: skip
    try:
        result = run_eval(config).to_dict()
    except (
        CheckpointError,
        IndexMismatchError,
        IndexNotFoundError,
        FileNotFoundError,
        ValueError,
        CrfUnavailableError,
    ) as e:
        return cli.fail(PROG, e)
    print(json.dumps(result if args.full else summary(result), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
