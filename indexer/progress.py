"""Progress of a long job: a tqdm bar (images/s, ETA) and an optional JSON file rewritten atomically;
and :func:`configure_logging`, the log format of the indexer's and the server's commands.

The file holds ``{"done": n, "total": N, "rate": x, "eta_s": s, "stage": "..."}`` (INTERFACES.md);
the server polls it while the job runs.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tqdm import tqdm


def configure_logging(level: int | str = logging.INFO) -> None:
    """The commands' log lines (time, level, logger, message) at ``level``. faiss's loader stays at WARNING:
    on an AVX2 CPU it logs at INFO that it "could not load" an AVX2 build (this wheel ships one generic build)
    with a ModuleNotFoundError, then loads the generic one: harmless, but alarming in a demo's output. Likewise
    torch's C++ builder warns "No CUDA runtime is found" on every CPU-only machine when ``torch.compile``
    builds its kernels (``slotcon index --compile``): it stays at ERROR."""
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)


#: ``--compile`` values and the ``compile`` argument of the configs each stands for (None: auto).
COMPILE_MODES: dict[str, bool | None] = {"auto": None, "on": True, "off": False}


def add_compile_argument(parser: argparse.ArgumentParser) -> None:
    """``--compile auto|on|off`` of the inference commands; ``COMPILE_MODES[args.compile]`` is the
    ``compile`` argument of their configs (:class:`core.infer_model.CompilePlan`)."""
    parser.add_argument(
        "--compile",
        choices=tuple(COMPILE_MODES),
        default="auto",
        help="torch.compile the model (Inductor, frozen weights); auto: on a CPU, when after the first batch "
        "the rest of the job would take over 4 minutes eagerly",
    )


def exit_on_sigterm() -> None:
    """SIGTERM raises ``SystemExit(128 + 15)``, which unwinds: a command's temporary build directory is removed."""

    def _terminate(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _terminate)


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as JSON to a temp file beside ``path`` and rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj))
    os.replace(tmp, path)


class Progress:
    """Counts work done; shows a bar on stderr when ``bar`` and writes ``progress_file`` when given.

    ``scale`` multiplies the local count (a rank of ``world_size`` processes reports for all of them);
    ``callback(done, total, stage)`` is called on every update.
    """

    def __init__(
        self,
        total: int,
        stage: str,
        progress_file: str | os.PathLike | None = None,
        bar: bool = True,
        unit: str = "img",
        scale: int = 1,
        min_interval: float = 0.5,
        callback: Callable[[int, int, str], None] | None = None,
    ) -> None:
        self.total, self.stage, self.scale, self.callback = total, stage, scale, callback
        self.file = Path(progress_file) if progress_file else None
        self.done = 0
        self.start = time.perf_counter()
        self.min_interval = min_interval
        self._last_write = 0.0
        self.bar = tqdm(total=total, desc=stage, unit=unit, file=sys.stderr, dynamic_ncols=True) if bar else None
        self._write(force=True)

    def rate(self) -> float:
        """Units per second since the start."""
        elapsed = time.perf_counter() - self.start
        return self.done / elapsed if elapsed > 0 else 0.0

    def _write(self, force: bool = False) -> None:
        if self.file is None:
            return
        now = time.perf_counter()
        if not force and now - self._last_write < self.min_interval:
            return
        self._last_write = now
        rate = self.rate()
        remaining = max(0, self.total - self.done)
        eta = remaining / rate if rate > 0 else None
        done = min(self.total, self.done)
        write_json_atomic(
            self.file,
            {
                "done": done,
                "total": self.total,
                "rate": round(rate, 3),
                "eta_s": None if eta is None else round(eta, 1),
                "stage": self.stage,
            },
        )

    def update(self, n: int = 1) -> None:
        """Add ``n`` local units (multiplied by ``scale``)."""
        n *= self.scale
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
        self._write()
        if self.callback is not None:
            self.callback(min(self.done, self.total), self.total, self.stage)

    def set_stage(self, stage: str, total: int | None = None) -> None:
        """Switch to another stage (e.g. ``merge``), optionally with a new total; the count restarts."""
        self.stage = stage
        if total is not None:
            self.total, self.done, self.start = total, 0, time.perf_counter()
            if self.bar is not None:
                self.bar.reset(total=total)
        if self.bar is not None:
            self.bar.set_description(stage)
        self._write(force=True)

    def close(self, stage: str | None = None) -> None:
        """Final write (``stage`` e.g. ``"done"``) and close the bar."""
        if stage is not None:
            self.stage = stage
        self._write(force=True)
        if self.callback is not None:
            self.callback(min(self.done, self.total), self.total, self.stage)
        if self.bar is not None:
            self.bar.close()
