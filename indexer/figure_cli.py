"""``slotcon figure``: the paper's concept figure of an index as PNG, PDF or SVG."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from core.datasets import ImageReadError
from indexer import cli_common as cli
from indexer.figure import DEFAULT_CELL_PX, DEFAULT_TOPK, concept_figure, prototype_ranges
from indexer.overlay import FIGURE3_ALPHA


def _prototype_list(text: str) -> str:
    """``text`` once its syntax is checked (its ids are checked against the index's K when it is open)."""
    try:
        prototype_ranges(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def build_parser() -> argparse.ArgumentParser:
    """The ``figure`` CLI's parser."""
    p = cli.index_parser(
        "slotcon figure",
        "Concept figure of an index: a row of top-k segments per prototype, masks in red (PNG, PDF or SVG by the "
        "output's suffix; deterministic).",
    )
    p.add_argument(
        "--prototypes",
        required=True,
        type=_prototype_list,
        metavar="IDS",
        help="prototype ids, e.g. 3,17,42 or 3-5,9 (one row each, in this order)",
    )
    p.add_argument("--topk", type=int, default=DEFAULT_TOPK, help="segments per row (default %(default)s)")
    p.add_argument("--out", required=True, help="output file: .png, .pdf or .svg")
    p.add_argument("--alpha", type=float, default=FIGURE3_ALPHA, help="mask opacity (default %(default)s)")
    p.add_argument("--labels", action="store_true", help="a title column: #id and the prototype's label")
    p.add_argument("--cell-px", type=int, default=DEFAULT_CELL_PX, help="cell side in pixels (default %(default)s)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """``slotcon figure``: 0 on success, 2 on bad arguments, an unreadable index or image."""
    args = build_parser().parse_args(argv)
    try:
        layout, rows = concept_figure(
            args.index, args.prototypes, args.topk, args.alpha, args.labels, args.cell_px, args.out
        )
    except (OSError, ValueError, ImageReadError) as e:  # IndexNotFoundError is an OSError
        print(f"slotcon figure: {e}", file=sys.stderr)
        return 2
    w, h = layout.size
    print(f"wrote {args.out}: {layout.rows} rows x {layout.cols} cells ({w}x{h} px)")
    short = [f"#{r.prototype} ({len(r.segments)})" for r in rows if len(r.segments) < layout.cols]
    if short:
        print(f"fewer than {layout.cols} segments (padded grey): {', '.join(short)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
