"""``slotcon compare``: two indexes of the same images, or a run's timeline, printed or as JSON."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from indexer import cli_common as cli
from indexer.compare import (
    DEFAULT_COVERAGE,
    DEFAULT_MIN_IOU,
    DEFAULT_MIN_PART,
    Comparison,
    Relation,
    Timeline,
    compare,
    timeline,
)


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def format_comparison(c: Comparison) -> str:
    """Human-readable report of a comparison."""
    lines = [
        f"A: {c.index_a} ({len(c.active_a)}/{c.num_prototypes_a} active)",
        f"B: {c.index_b} ({len(c.active_b)}/{c.num_prototypes_b} active)",
        f"{c.num_images} shared images, {c.num_pixels} pixels; {c.seconds:.2f} s",
        f"matched {len(c.pairs)} (mean IoU {_fmt(c.mean_iou)}, pixel-weighted {_fmt(c.weighted_iou)}, "
        f"{c.same_id_matches} keep their id)",
    ]
    lines += [f"  A{p.a:<4d} ↔ B{p.b:<4d} IoU {p.iou:.3f}  ({p.area_a} / {p.area_b} px)" for p in c.pairs]

    def parts(side: str, r: Relation) -> str:
        return ", ".join(
            f"{side}{q} {cv:.0%}" + (" absorbed" if q in r.absorbed else "")
            for q, cv in zip(r.parts, r.part_coverage, strict=True)
        )

    for r in c.splits:
        lines.append(f"split  A{r.source} → {parts('B', r)} (covers {r.coverage:.0%})")
    for r in c.merges:
        lines.append(f"merge  {parts('A', r)} → B{r.source} (covers {r.coverage:.0%})")
    lines.append(f"born (B only): {c.born or '-'}")
    lines.append(f"died (A only): {c.died or '-'}")
    return "\n".join(lines)


def format_timeline(t: Timeline) -> str:
    """The timeline as a table."""
    lines = ["checkpoint            active  dead"]
    lines += [f"{p['label']:<20s}  {p['active']:>6d}  {p['dead']:>4d}" for p in t.points]
    lines.append("")
    lines.append("interval                               matched  mean IoU  splits  merges  born  died  same id")
    for iv in t.intervals:
        lines.append(
            f"{iv['from'] + ' → ' + iv['to']:<38s} {iv['matched']:>7d}  {_fmt(iv['mean_iou']):>8s}  "
            f"{iv['splits']:>6d}  {iv['merges']:>6d}  {iv['born']:>4d}  {iv['died']:>4d}  "
            f"{iv['same_id_matches']:>7d}"
        )
    lines.append(f"{t.seconds:.2f} s")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """The ``compare`` CLI's parser."""
    p = cli.parser(
        "slotcon compare",
        "Compare the prototypes of two indexes of the same images (Hungarian matching on pixel co-assignment; "
        "splits, merges, born, died), or a run's timeline.",
        show_defaults=False,
    )
    p.add_argument("indexes", nargs="*", metavar="INDEX", help="INDEX_A INDEX_B")
    p.add_argument("--timeline", nargs="+", metavar="INDEX", help="indexes of one run's checkpoints, in order")
    p.add_argument("--json", metavar="OUT", help="also write the result as JSON ('-': print JSON instead)")
    p.add_argument(
        "--coverage",
        type=float,
        default=DEFAULT_COVERAGE,
        help="a split/merge part lies at least this share inside its source (default %(default)s)",
    )
    p.add_argument(
        "--min-part",
        type=float,
        default=DEFAULT_MIN_PART,
        help="a part claims at least this share of its source (default %(default)s)",
    )
    p.add_argument(
        "--min-iou", type=float, default=DEFAULT_MIN_IOU, help="least IoU of a matched pair (default %(default)s)"
    )
    p.add_argument("--stride", type=int, default=1, help="count every N-th pixel row/column (default 1)")
    return p


def main(argv: list[str] | None = None) -> int:
    """``slotcon compare``: 0 on success, 2 on bad arguments or unreadable indexes."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.timeline and args.indexes:
        parser.error("give INDEX_A INDEX_B or --timeline I1 I2 ..., not both")
    if not args.timeline and len(args.indexes) != 2:
        parser.error("give two indexes (INDEX_A INDEX_B) or --timeline I1 I2 ...")
    if not 0 < args.coverage <= 1 or not 0 <= args.min_part <= 1 or not 0 <= args.min_iou <= 1 or args.stride < 1:
        parser.error("--coverage in (0, 1], --min-part and --min-iou in [0, 1], --stride >= 1")
    kw = dict(coverage=args.coverage, min_part=args.min_part, min_iou=args.min_iou, stride=args.stride)
    try:
        if args.timeline:
            result: Comparison | Timeline = timeline(args.timeline, **kw)
            text = format_timeline(result)
        else:
            result = compare(args.indexes[0], args.indexes[1], **kw)
            text = format_comparison(result)
    except (OSError, ValueError) as e:  # IndexNotFoundError is an OSError; version/mismatch ValueErrors
        print(f"slotcon compare: {e}", file=sys.stderr)
        return 2
    if args.json == "-":
        print(result.to_json())
        return 0
    print(text)
    if args.json:
        Path(args.json).write_text(result.to_json() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
