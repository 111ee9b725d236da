"""Run-directory logging: ``metrics.jsonl`` records, ``train.log`` and a progress display (rank 0 only).

Each logged step appends one JSON object (fields in docs/INTERFACES.md); the run ends with an event line
``{"event": "finished" | "stopped" | "failed", ...}``. On an interactive terminal a tqdm bar shows
progress; otherwise (or with ``--progress log``) plain log lines do.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

logger = logging.getLogger("trainer")


def setup_logging(output_dir: Path | None, rank: int) -> None:
    """Log INFO to stderr (rank 0; others WARNING) and, on rank 0, to ``output_dir/train.log``; with several
    processes each line names its rank."""
    who = f"[rank {rank}] " if int(os.environ.get("WORLD_SIZE", 1)) > 1 else ""
    fmt = logging.Formatter(f"%(asctime)s {who}%(levelname)s %(name)s: %(message)s", "%Y-%m-%d %H:%M:%S")
    root = logging.getLogger()
    root.setLevel(logging.INFO if rank == 0 else logging.WARNING)
    for h in list(root.handlers):
        if getattr(h, "_slotcon", False):
            root.removeHandler(h)
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if output_dir is not None and rank == 0:
        handlers.append(logging.FileHandler(output_dir / "train.log"))
    for h in handlers:
        h.setFormatter(fmt)
        h._slotcon = True  # type: ignore[attr-defined]
        root.addHandler(h)


class MetricsWriter:
    """Appends JSON lines to ``metrics.jsonl`` and shows progress; a no-op object on ranks > 0."""

    def __init__(
        self, path: Path | None, total_steps: int, epochs: int, progress: str = "auto", start_step: int = 0
    ) -> None:
        self.path, self.total_steps, self.epochs = path, total_steps, epochs
        self.start_time = time.time()
        self.start_step = start_step
        use_bar = progress == "bar" or (progress == "auto" and sys.stderr.isatty())
        self.bar = None
        if path is not None and use_bar:
            from tqdm import tqdm

            self.bar = tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True)

    def _write(self, record: dict[str, Any]) -> None:
        if self.path is None:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")

    def log_step(self, record: dict[str, Any]) -> None:
        """Write one step record (adds ``total_steps``, ``epochs``, ``elapsed_s``, ``eta_s``, ``time``)."""
        if self.path is None:
            return
        now = time.time()
        elapsed = now - self.start_time
        done = record["step"] - self.start_step
        eta = elapsed / done * (self.total_steps - record["step"]) if done > 0 else None
        record = {
            **record,
            "total_steps": self.total_steps,
            "epochs": self.epochs,
            "elapsed_s": round(elapsed, 3),
            "eta_s": round(eta, 1) if eta is not None else None,
            "time": now,
        }
        record = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}
        self._write(record)

        def num(key: str, spec: str) -> str:  # a non-finite value (an fp16 step skipped) was written as null
            value = record.get(key)
            return format(value, spec) if isinstance(value, (int, float)) else "nan"

        if self.bar is not None:
            self.bar.n = record["step"]
            self.bar.set_postfix(
                loss=num("loss", ".4f"), lr=num("lr", ".3g"), ips=num("images_per_sec", ".0f"), refresh=False
            )
            self.bar.refresh()
        else:
            logger.info(
                "epoch %d/%d step %d/%d loss %s (group %s slot %s) lr %s m %s %s img/s data %s%% active %s "
                "pairs %s dead %s eta %s",
                record["epoch"],
                self.epochs,
                record["step"],
                self.total_steps,
                num("loss", ".4f"),
                num("loss_group", ".4f"),
                num("loss_slot", ".4f"),
                num("lr", ".4g"),
                num("momentum", ".5f"),
                num("images_per_sec", ".1f"),
                format(100 * (record.get("data_wait") or 0.0), ".0f"),
                num("active_slots", ".2f"),
                num("positive_pairs", ".2f"),
                num("batch_dead", ".0f"),
                f"{eta:.0f}s" if eta is not None else "?",
            )

    def set_total(self, total_steps: int) -> None:
        """Changes the total that ETAs and the bar count towards (a time budget fixed it)."""
        self.total_steps = total_steps
        if self.bar is not None:
            self.bar.total = total_steps
            self.bar.refresh()

    def note(self, event: str, **fields: Any) -> None:
        """Write an event line that does not end the run (e.g. ``budget``: the total a time budget fixed)."""
        self._write(
            {"event": event, "time": time.time(), "elapsed_s": round(time.time() - self.start_time, 3), **fields}
        )

    def event(self, event: str, **fields: Any) -> None:
        """Write the final event line (``finished``, ``stopped`` or ``failed``) and close the bar."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        self._write(
            {"event": event, "time": time.time(), "elapsed_s": round(time.time() - self.start_time, 3), **fields}
        )
