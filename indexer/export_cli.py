"""``slotcon export-index``: an index as COCO JSON or CSV/Parquet tables."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from indexer import cli_common as cli
from indexer.export import FORMATS, MissingPackageError, export_index


def build_parser() -> argparse.ArgumentParser:
    """The ``export-index`` CLI's parser."""
    p = cli.index_parser(
        "slotcon export-index",
        "Export an index's segments and statistics: COCO-style JSON (RLE masks, prototypes as categories) or "
        "CSV/Parquet tables.",
    )
    p.add_argument("--format", required=True, choices=FORMATS)
    p.add_argument("--out", required=True, help="a .json file (coco) or a directory (csv, parquet)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """``slotcon export-index``: 0 on success, 2 on an unreadable index, a bad path or a missing package."""
    args = build_parser().parse_args(argv)
    try:
        counts = export_index(args.index, args.format, args.out)
    except (OSError, ValueError, MissingPackageError) as e:
        print(f"slotcon export-index: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.out} ({args.format}): " + ", ".join(f"{v} {k}" for k, v in counts.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
