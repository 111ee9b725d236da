"""The command lines of the pipeline's steps, built in one place: training, indexing and evaluation
runs are child processes of both ``slotcon demo`` and the server's jobs (``server.services.launch``).

Imports nothing of the project (every package may use it; tests/test_imports.py).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from pathlib import Path


def python_argv(module: str, *args: str | Path) -> list[str]:
    """``[python, -m, module, *args]`` with this interpreter."""
    return [sys.executable, "-m", module, *map(str, args)]


def train_argv(
    preset: str, data: Path, output_dir: Path, extra: Iterable[str] = (), nproc_per_node: int = 1
) -> list[str]:
    """``python -m trainer --preset P --data D --output-dir O [extra]`` (``torchrun --standalone`` when
    ``nproc_per_node`` > 1)."""
    args = ["--preset", preset, "--data", str(data), "--output-dir", str(output_dir), *extra]
    if nproc_per_node > 1:
        return python_argv(
            "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc_per_node}", "-m", "trainer", *args
        )
    return python_argv("trainer", *args)


def index_argv(
    checkpoint: Path,
    data: Path,
    out: Path,
    *,
    split: str,
    resize: int | None = None,
    crop: int | None = None,
    batch_size: int | None = None,
    progress_file: Path | None = None,
) -> list[str]:
    """``python -m indexer --checkpoint C --data D --split S --out O [--resize R --crop C] ...``."""
    args = ["--checkpoint", str(checkpoint), "--data", str(data), "--split", split, "--out", str(out)]
    for flag, value in (
        ("--resize", resize),
        ("--crop", crop),
        ("--batch-size", batch_size),
        ("--progress-file", progress_file),
    ):
        if value is not None:
            args += [flag, str(value)]
    return python_argv("indexer", *args)


def eval_argv(
    checkpoint: Path,
    data: Path,
    *,
    protocol: str,
    baseline: str,
    index: Path,
    out: Path,
    split: str | None = None,
    resolution: int | None = None,
    progress_file: Path | None = None,
    seeds: int | None = None,
    all_images: bool = False,
    metrics: Sequence[str] = (),
    dissection_threshold: float | None = None,
) -> list[str]:
    """``python -m indexer.eval_cli --checkpoint C --data D --protocol P --baseline B --index I --out O ...``
    (``seeds``: runs of the k-means baseline and the cluster probe; ``all_images``: no curated list;
    ``metrics``: one ``--metric`` each, none for the default)."""
    args = ["--checkpoint", str(checkpoint), "--data", str(data), "--protocol", protocol]
    for flag, value in (("--split", split), ("--resolution", resolution), ("--seeds", seeds)):
        if value is not None:
            args += [flag, str(value)]
    if all_images:
        args.append("--all-images")
    for metric in metrics:
        args += ["--metric", metric]
    if dissection_threshold is not None:
        args += ["--dissection-threshold", str(dissection_threshold)]
    args += ["--baseline", baseline, "--index", str(index), "--out", str(out)]
    if progress_file is not None:
        args += ["--progress-file", str(progress_file)]
    return python_argv("indexer.eval_cli", *args)
