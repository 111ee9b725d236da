"""The ``slotcon`` command: one entry point, subcommands implemented by each package.

Subcommands are resolved lazily (by module name) so ``slotcon --help`` stays fast and a missing optional
piece only fails the subcommand that needs it. This dispatch lives here, above every package, so that
``core`` (the method) points at nothing (tests/test_imports.py checks the arrows).
"""

from __future__ import annotations

import importlib
import sys

# name → (module with a ``main(argv) -> int | None``, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "synth": ("core.synthetic", "generate the synthetic scenes dataset (COCO layout)"),
    "train": ("trainer.__main__", "pretrain SlotCon (CPU, one GPU, or torchrun DDP)"),
    "export": ("trainer.export", "export a checkpoint for downstream transfer"),
    "index": ("indexer.__main__", "build a concept index (FAISS + SQLite) from a checkpoint"),
    "index-images": ("indexer.images_cli", "build an image index: one vector per image and prototype, no masks"),
    "stats": ("indexer.stats_cli", "print/store the slot statistics of an index"),
    "eval": ("indexer.eval_cli", "unsupervised segmentation with Hungarian matching"),
    "compare": ("indexer.compare_cli", "compare the prototypes of two indexes (or a run's timeline)"),
    "figure": ("indexer.figure_cli", "concept figure: top-k segments per prototype (PNG, PDF, SVG)"),
    "export-index": ("indexer.export_cli", "export an index as COCO JSON or CSV/Parquet tables"),
    "serve": ("server.__main__", "run the FastAPI backend"),
    "ui": ("slotcon.ui_launcher", "run the Streamlit explorer"),
    "demo": ("slotcon.demo", "one command: data, training, index, evaluation, API and UI"),
}


def _usage() -> str:
    width = max(map(len, SUBCOMMANDS))
    lines = ["usage: slotcon <command> [options]", "", "commands:"]
    lines += [f"  {name:<{width}}  {text}" for name, (_, text) in SUBCOMMANDS.items()]
    lines += ["", "Run 'slotcon <command> --help' for the options of a command."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Dispatch ``slotcon <command> ...`` to the command's module; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        print(f"slotcon: unknown command {name!r}; choose one of: {', '.join(SUBCOMMANDS)}", file=sys.stderr)
        return 2
    module = importlib.import_module(SUBCOMMANDS[name][0])
    result = module.main(rest)
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
