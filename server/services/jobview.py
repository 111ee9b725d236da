"""A job row as the API shows it: status plus progress, ETA and latest metrics read from its files."""

from __future__ import annotations

from pathlib import Path

from server.schemas import Job, JobLog
from server.services.jobstore import JobRow
from server.services.progress_reader import MetricsReader, fraction, read_progress_file

LOG_TAIL_BYTES = 64 * 1024


def job_view(row: JobRow, metrics: MetricsReader) -> Job:
    """The :class:`Job` answer for ``row``: progress from metrics.jsonl (train) or the progress file."""
    progress = eta = stage = step = total = latest = None
    if row.kind == "train":
        latest = metrics.latest(row.progress_path)
        if latest is not None:
            step, total = latest.get("step"), latest.get("total_steps")
            progress, eta = fraction(step, total), latest.get("eta_s")
            stage = f"epoch {latest.get('epoch')}/{latest.get('epochs')}" if "epoch" in latest else None
    else:
        info = read_progress_file(row.progress_path)
        if info is not None:
            progress, eta, stage = fraction(info.get("done"), info.get("total")), info.get("eta_s"), info.get("stage")
            step, total = info.get("done"), info.get("total")
    if row.status == "succeeded":
        progress, eta = 1.0, 0.0
    elif row.status in ("failed", "stopped"):
        eta = None
    return Job(
        id=row.id, kind=row.kind, name=row.name, status=row.status, progress=progress,
        eta_s=eta if isinstance(eta, (int, float)) else None, stage=stage,
        step=step if isinstance(step, int) else None, total_steps=total if isinstance(total, int) else None,
        latest_metrics=latest, config=row.config, pid=row.pid, created_at=row.created_at,
        started_at=row.started_at, finished_at=row.finished_at, exit_code=row.exit_code, message=row.message,
    )  # fmt: skip


def job_log(row: JobRow, tail_bytes: int = LOG_TAIL_BYTES) -> JobLog:
    """The last ``tail_bytes`` of the job's log (decoded leniently)."""
    path = Path(row.log_path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            f.seek(max(0, size - tail_bytes))
            data = f.read()
    except FileNotFoundError:
        size, data = 0, b""
    return JobLog(job_id=row.id, log=data.decode("utf-8", errors="replace"), size=size, truncated=size > tail_bytes)
