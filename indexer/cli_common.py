"""What the indexer's command lines share: their parsers, the flags several of them take, and the handling of
those flags (``slotcon index``, ``index-images``, ``eval``, ``stats``, ``compare``, ``figure``, ``export-index``).

- :func:`parser`: ``slotcon <command>``'s parser;
- :func:`add_build_arguments`: ``--checkpoint --data --split --out --resize --crop`` of the two index builds;
- :func:`add_faiss_arguments`: ``--faiss --nlist --pq-m`` of the two index builds;
- :func:`add_job_arguments`: the flags of every command that runs the model (``--batch-size --workers --device
  --limit --progress-file --no-progress --plain-inference --compile``), and :func:`job_options`, the keywords
  they give the job's config, with the inference settings of the environment (:mod:`indexer.settings`);
- :func:`index_parser`: the parser of a command that reads an index (``--index``);
- :func:`add_duplicate_threshold`;
- :func:`start_job` (arguments, log format, SIGTERM), :func:`fail` (the one-line error, exit code 2) and
  :func:`print_result`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from core.recipes import INDEX_CROP, INDEX_RESIZE, NEAR_DUPLICATE_THRESHOLD
from indexer.progress import COMPILE_MODES, add_compile_argument, configure_logging, exit_on_sigterm

#: The flags of every command that runs the model, as most of them word them (:func:`add_job_arguments`).
JOB_FLAGS: dict[str, dict[str, Any]] = {
    "--batch-size": dict(type=int, default=32),
    "--workers": dict(type=int, default=None, help="data-loading processes (default: spare cores only)"),
    "--device": dict(default=None, help="torch device (default: cuda if available, else cpu)"),
    "--limit": dict(type=int, default=None, help="index only the first N images"),
    "--progress-file": dict(default=None, help="JSON progress file rewritten as work goes"),
    "--no-progress": dict(action="store_true", help="no progress bar"),
    "--plain-inference": dict(
        action="store_true", help="the full model, BN unfolded (reference path for A/B runs; same assignments)"
    ),
}


def parser(prog: str, description: str, *, show_defaults: bool = True) -> argparse.ArgumentParser:
    """The parser of ``prog``; ``show_defaults``: every flag's help ends with its default."""
    formatter = argparse.ArgumentDefaultsHelpFormatter if show_defaults else argparse.HelpFormatter
    return argparse.ArgumentParser(prog=prog, description=description, formatter_class=formatter)


def add_build_arguments(p: argparse.ArgumentParser, built: str) -> None:
    """``--checkpoint``, ``--data``, ``--split``, ``--out`` (the ``built`` directory) and the model input
    (``--resize``, ``--crop``) of an index build."""
    p.add_argument("--checkpoint", required=True, help="checkpoint (this project's or the public release's)")
    p.add_argument("--data", required=True, help="dataset root: COCO / ImageNet layout, image folder, synthetic")
    p.add_argument("--split", default="val2017", help="split folder under the root ('' for the root itself)")
    p.add_argument("--out", required=True, help=f"{built} directory (replaced only when the build succeeds)")
    p.add_argument("--resize", type=int, default=INDEX_RESIZE, help="shorter side before the centre crop")
    p.add_argument("--crop", type=int, default=INDEX_CROP, help="centre-crop size (the model's input)")


def add_faiss_arguments(
    p: argparse.ArgumentParser, choices: tuple[str, ...], default: str, help: str, vectors: str
) -> None:
    """``--faiss`` (the index type: ``choices``, ``default``, ``help``), ``--nlist`` (default 4·sqrt(the count
    of ``vectors``)) and ``--pq-m``."""
    p.add_argument("--faiss", default=default, choices=choices, help=help)
    p.add_argument("--nlist", type=int, default=None, help=f"IVF lists (default 4*sqrt({vectors}))")
    p.add_argument("--pq-m", type=int, default=None, help="PQ sub-quantisers")


def add_job_arguments(p: argparse.ArgumentParser, **changes: dict[str, Any]) -> None:
    """The flags of :data:`JOB_FLAGS` and ``--compile``; ``changes``: per flag (by its dest, e.g.
    ``batch_size``), the keywords in which this command's flag differs."""
    unknown = set(changes) - {_dest(flag) for flag in JOB_FLAGS}
    if unknown:
        raise ValueError(f"no job flag {sorted(unknown)}")
    for flag, spec in JOB_FLAGS.items():
        p.add_argument(flag, **{**spec, **changes.get(_dest(flag), {})})
    add_compile_argument(p)


def _dest(flag: str) -> str:
    return flag.removeprefix("--").replace("-", "_")


def job_options(args: argparse.Namespace) -> dict[str, Any]:
    """The config keywords (:class:`indexer.build.IndexConfig`, :class:`indexer.evaluate.EvalConfig`,
    :class:`indexer.image_build.ImageIndexConfig`) of :func:`add_job_arguments`' flags, with the inference
    settings of the environment (:class:`indexer.settings.InferSettings`): ``fused`` unless
    ``--plain-inference`` or ``SLOTCON_INFER=plain``; ``inference`` from ``SLOTCON_INFER_*``, not compiled with
    ``--compile off``. ValueError naming the variable when one is malformed."""
    from indexer.settings import read_infer_settings

    settings = read_infer_settings()
    compile = COMPILE_MODES[args.compile]
    inference = settings.options()
    if compile is False:  # the flag wins over SLOTCON_INFER_COMPILE
        inference = replace(inference, compile=False)
    same = {name: getattr(args, name) for name in ("batch_size", "workers", "device", "limit", "progress_file")}
    fused = settings.fused and not args.plain_inference
    return same | dict(show_progress=not args.no_progress, fused=fused, inference=inference, compile=compile)


def add_duplicate_threshold(p: argparse.ArgumentParser) -> None:
    """``--duplicate-threshold``: the cosine of near-duplicate prototypes."""
    p.add_argument(
        "--duplicate-threshold",
        type=float,
        default=NEAR_DUPLICATE_THRESHOLD,
        help="cosine above which two prototypes count as near-duplicates",
    )


def index_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """The parser of a command that reads an index (``--index``, required), its defaults written in its help."""
    p = parser(prog, description, show_defaults=False)
    p.add_argument("--index", required=True, help="index directory")
    return p


def start_job(p: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """What a command that runs a job does first: parse ``argv``, set the log format and make SIGTERM unwind
    (so its temporary directories are removed); returns the arguments."""
    args = p.parse_args(argv)
    configure_logging()
    exit_on_sigterm()
    return args


def fail(prog: str, error: BaseException | str) -> int:
    """Prints ``<prog>: error: <error>`` to stderr; returns 2, the exit code of bad input."""
    print(f"{prog}: error: {error}", file=sys.stderr)
    return 2


def print_result(prog: str, work: Callable[[], object], errors: tuple[type[BaseException], ...]) -> int:
    """Runs ``work`` and prints what it returns (0), or :func:`fail` on one of ``errors`` (2)."""
    try:
        result = work()
    except errors as e:
        return fail(prog, e)
    print(result)
    return 0
