"""Job command lines: every path comes from the settings, every client value from a validated model.

Training: ``python -m trainer --preset P --data <data_root> --output-dir <runs_dir>/<name> [flags]``
(``torchrun --standalone --nproc_per_node N -m trainer ...`` when N > 1). Indexing:
``python -m indexer --checkpoint <runs_dir>/<run>/<file> --data <data_root> --out <indexes_dir>/<name>``.
Evaluation: ``python -m indexer.eval_cli`` on the active index's checkpoint.
"""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path
from typing import Any

from server.commands import eval_argv, index_argv, train_argv
from server.errors import ApiError, not_found
from server.schemas import EvalRequest, IndexRequest, TrainRequest
from server.services.jobs import Supervisor
from server.services.jobstore import JobRow
from server.settings import Settings


def _flag(key: str, value: Any) -> list[str]:
    flag = "--" + key.replace("_", "-")
    if isinstance(value, bool):
        return [flag, "true" if value else "false"]
    return [flag, str(value)]


def _stamp() -> str:
    """A timestamp with a random suffix: names made in the same second still differ."""
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"


def process_limit(device: str | None) -> tuple[int, str]:
    """(how many processes a training job may start here, of what): the visible GPUs when it trains
    on CUDA (``device`` cuda, or auto with a GPU), else the CPU cores this process may use."""
    import torch

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if device == "cuda" or (device in (None, "auto") and gpus):
        return gpus, "visible GPUs"
    try:
        return len(os.sched_getaffinity(0)), "CPU cores"
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1, "CPU cores"


def _inside(base: Path, name: str) -> Path:
    """``base/name`` resolved, refusing anything that escapes ``base`` (names are validated already)."""
    base = base.resolve()
    path = (base / name).resolve()
    if path.parent != base:
        raise ApiError(422, "invalid_request", f"name {name!r} is not a plain directory name")
    return path


def _job_files(settings: Settings, kind: str, name: str) -> tuple[Path, Path]:
    jobs = settings.state_dir.resolve() / "jobs"
    stem = f"{kind}-{name}-{_stamp()}"  # unique: two jobs never share a log
    return jobs / f"{stem}.log", jobs / f"{stem}.progress.json"


def start_train(settings: Settings, supervisor: Supervisor, req: TrainRequest) -> JobRow:
    """Launch a training job (409 while another runs, or when the run exists and ``resume`` is off)."""
    limit, of_what = process_limit(req.overrides.device)
    if req.nproc_per_node > limit:
        raise ApiError(
            422, "invalid_request",
            f"nproc_per_node: {req.nproc_per_node} processes asked, but this server has {limit} {of_what}",
        )  # fmt: skip
    name = req.name or f"{req.preset}-{_stamp()}"
    out = _inside(settings.runs_dir, name)
    if req.resume and not out.is_dir():
        raise not_found("run", name)
    if not req.resume and out.exists() and any(out.iterdir()):
        raise ApiError(409, "run_exists", f"run {name!r} already exists; pick another name or set resume=true")
    data = settings.data_root.resolve()
    if not data.is_dir():
        raise ApiError(
            409,
            "no_data",
            f"the configured data root {settings.data_root.name!r} does not exist "
            "on the server (generate it with 'slotcon synth')",
        )
    args = ["--progress", "log"]
    for key, value in req.overrides.model_dump(exclude_none=True).items():
        args += _flag(key, value)
    if req.resume:
        args += ["--auto-resume", "true"]
    argv = train_argv(req.preset, data, out, args, nproc_per_node=req.nproc_per_node)
    log, _ = _job_files(settings, "train", name)
    return supervisor.launch(
        kind="train",
        name=name,
        argv=argv,
        output_dir=out,
        progress_path=out / "metrics.jsonl",
        log_path=log,
        config=req.model_dump(),
        done_path=out / "final.pth",
        exclusive=True,
    )


def _newest_checkpoint(run_dir: Path) -> Path:
    for preferred in ("final.pth", "current.pth"):
        if (run_dir / preferred).is_file():
            return run_dir / preferred
    found = sorted(run_dir.glob("*.pth"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise ApiError(404, "not_found", f"run {run_dir.name!r} has no checkpoint yet")
    return found[-1]


def resolve_checkpoint(settings: Settings, run: str, file: str | None) -> Path:
    """``<runs_dir>/<run>/<file>`` (newest when ``file`` is None), or 404."""
    run_dir = _inside(settings.runs_dir, run)
    if not run_dir.is_dir():
        raise not_found("run", run)
    if file is None:
        return _newest_checkpoint(run_dir)
    path = _inside(run_dir, file)
    if not path.is_file():
        raise not_found("checkpoint", f"{run}/{file}")
    return path


def start_index(settings: Settings, supervisor: Supervisor, req: IndexRequest) -> JobRow:
    """Launch an indexing job on a run's checkpoint; output ``<indexes_dir>/<name>`` (by default a name read
    from the run and the checkpoint: ``cpu-demo-final``, ``cpu-demo-epoch2``)."""
    from server.services.indexes import readable_name

    run, file = req.checkpoint.split("/", 1) if req.checkpoint else (req.run, None)
    ckpt = resolve_checkpoint(settings, run, file)
    running = {r.name for r in supervisor.store.active("index")}  # their folders may not exist yet
    name = req.name or readable_name(settings.indexes_dir, run, ckpt, running)
    out = _inside(settings.indexes_dir, name)
    if out.exists() and any(out.iterdir()):
        raise ApiError(409, "index_exists", f"index {name!r} already exists; pick another name")
    log, progress = _job_files(settings, "index", name)
    argv = index_argv(
        ckpt,
        settings.data_root.resolve(),
        out,
        split=req.split,
        resize=req.resize,
        crop=req.crop,
        batch_size=req.batch_size or None,
        progress_file=progress,
    )
    config = req.model_dump() | {"checkpoint": f"{run}/{ckpt.name}"}
    return supervisor.launch(
        kind="index",
        name=name,
        argv=argv,
        output_dir=out,
        progress_path=progress,
        log_path=log,
        config=config,
        done_path=out / "manifest.json",
        exclusive_output=True,
    )


def start_eval(
    settings: Settings, supervisor: Supervisor, req: EvalRequest, index_dir: Path, checkpoint: Path
) -> JobRow:
    """Launch an unsupervised-segmentation evaluation of the active index's checkpoint (stored in the index).

    One evaluation per index at a time (409): they write into the index's database."""
    name = f"eval-{req.protocol}-{_stamp()}"
    log, progress = _job_files(settings, "eval", name)
    out_json = settings.state_dir.resolve() / "evals" / f"{name}.json"
    out_json.parent.mkdir(parents=True, exist_ok=True)
    argv = eval_argv(
        checkpoint,
        settings.data_root.resolve(),
        protocol=req.protocol,
        baseline=req.baseline,
        index=index_dir,
        out=out_json,
        split=req.split,
        resolution=req.resolution,
        progress_file=progress,
        seeds=req.seeds,
        all_images=req.all_images,
        metrics=req.metrics,
        dissection_threshold=req.dissection_threshold,
    )
    return supervisor.launch(
        kind="eval",
        name=name,
        argv=argv,
        progress_path=progress,
        log_path=log,
        config=req.model_dump() | {"index": index_dir.name},
        done_path=out_json,
        output_dir=index_dir.resolve(),
        exclusive_output=True,
    )
