"""``slotcon stats INDEX_DIR``: compute, store and print the slot statistics of an index."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from indexer import cli_common as cli

PROG = "slotcon stats"


def get_args_parser() -> argparse.ArgumentParser:
    """The parser of ``slotcon stats``."""
    p = cli.parser(PROG, __doc__)
    p.add_argument("index", help="index directory")
    cli.add_duplicate_threshold(p)
    p.add_argument("--full", action="store_true", help="print per-prototype lists too")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``slotcon stats``; prints JSON, returns the exit code (2 when the directory is no index)."""
    args = get_args_parser().parse_args(argv)
    from indexer.store import ConceptIndex, IndexNotFoundError, IndexVersionError

    try:
        index = ConceptIndex.open(args.index)
    except (IndexNotFoundError, IndexVersionError) as e:
        return cli.fail(PROG, e)
    with index:
        stats = index.refresh_stats(args.duplicate_threshold).to_dict()
    if not args.full:
        stats = {k: v for k, v in stats.items() if k not in ("per_prototype", "long_tail")}
    print(json.dumps(stats, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
