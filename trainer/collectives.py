"""What each rank asked of the process group, in order: the record that proves ranks stay in step.

Distributed training holds together only while every rank issues the same collectives in the same order.
:class:`CollectiveRecorder` sees all of them: it registers a pre-hook on the process group
(``ProcessGroup.register_pre_hook``, called by c10d before any collective is issued, whoever issues it:
DDP's gradient-bucket all-reduces and buffer broadcasts, SyncBatchNorm's all-gathers and all-reduces, the
trainer's own agreement and log reductions). Each entry holds the op, the input shapes and dtypes, and the
trainer's step and phase when it was issued.

Two uses:

- **Diagnosis, always on.** The last collective issued is kept, so a rank whose collective fails (its peer
  died, or a mismatch ran into the process group's timeout) says which collective it was in and at which
  step (:meth:`CollectiveRecorder.where`).
- **Proof, on request** (``--record-collectives DIR``): every entry is kept and written, one JSON line each,
  to ``DIR/collectives-rank{R}.jsonl`` when the run ends; :func:`compare_ranks` reads them back and names
  the first entry where two ranks differ.
"""

from __future__ import annotations

import itertools
import json
import logging
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch.distributed as dist

logger = logging.getLogger(__name__)

_HOOK_IDS = itertools.count(7_001)


@dataclass(frozen=True)
class Collective:
    """One collective as issued by this rank: ``seq`` counts from 0 in issue order."""

    seq: int
    op: str
    shapes: list[list[int]]
    dtypes: list[str]
    step: int
    phase: str

    def signature(self) -> tuple:
        """What every rank must agree on: the op, shapes, dtypes, step and phase (not timings)."""
        return (self.op, tuple(map(tuple, self.shapes)), tuple(self.dtypes), self.step, self.phase)

    def describe(self) -> str:
        """Human form: ``ALLREDUCE #12 (float32 [74]) in backward at step 3``."""
        tensors = ", ".join(f"{d} {s}" for d, s in zip(self.dtypes, self.shapes, strict=False))
        return f"{self.op} #{self.seq} ({tensors}) in {self.phase} at step {self.step}"


class CollectiveRecorder:
    """Tracks the collectives of the default process group (see the module docstring).

    ``step`` and ``phase`` are set by the trainer as it goes; ``keep`` keeps every entry (else only the last).
    """

    def __init__(self, keep: bool = False) -> None:
        self.keep = keep
        self.entries: list[Collective] = []
        self.last: Collective | None = None
        self.count = 0
        self.step = 0
        self.phase = "start"
        self.attached = False
        self._lock = threading.Lock()

    def attach(self, group: dist.ProcessGroup | None = None) -> bool:
        """Registers the pre-hook on ``group`` (default: the world); False where torch has no such hook."""
        pg = group or dist.group.WORLD
        if pg is None or not hasattr(pg, "register_pre_hook"):
            logger.warning("this torch has no ProcessGroup.register_pre_hook: collectives are not recorded")
            return False
        pg.register_pre_hook(next(_HOOK_IDS), self._on_collective)
        self.attached = True
        return True

    def set(self, step: int, phase: str) -> None:
        """The step and phase that the next collectives belong to."""
        self.step, self.phase = step, phase

    def _on_collective(self, args: Any) -> None:  # noqa: ANN401 - c10d's PreHookArgs
        op = str(args.name).rsplit(".", 1)[-1].split(":")[0]
        tensors = list(args.input_tensors)
        with self._lock:
            entry = Collective(
                seq=self.count,
                op=op,
                shapes=[list(t.shape) for t in tensors],
                dtypes=[str(t.dtype).removeprefix("torch.") for t in tensors],
                step=self.step,
                phase=self.phase,
            )
            self.count += 1
            self.last = entry
            if self.keep:
                self.entries.append(entry)

    def where(self) -> str:
        """Where this rank is: the step and phase, and the last collective it issued."""
        last = self.last.describe() if self.last else "none yet"
        return f"step {self.step}, {self.phase}; last collective issued: {last}"

    def dump(self, directory: str | Path, rank: int) -> Path:
        """Writes every kept entry to ``directory/collectives-rank{rank}.jsonl``; returns the path."""
        path = Path(directory) / f"collectives-rank{rank}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w") as f:
            for e in self.entries:
                f.write(json.dumps(asdict(e)) + "\n")
        return path


def read_record(path: str | Path) -> list[Collective]:
    """Reads a file written by :meth:`CollectiveRecorder.dump`."""
    return [Collective(**json.loads(line)) for line in Path(path).read_text().splitlines() if line.strip()]


def compare_ranks(records: list[list[Collective]]) -> str | None:
    """Returns None when every rank's record has the same signatures in the same order, else a message that
    names the first entry where a rank differs from rank 0 (or where one record ends early)."""
    if not records:
        return None
    ref = records[0]
    for rank, rec in enumerate(records[1:], start=1):
        for a, b in zip(ref, rec, strict=False):
            if a.signature() != b.signature():
                return f"rank 0 issued {a.describe()} where rank {rank} issued {b.describe()}"
        if len(ref) != len(rec):
            longer, extra = (0, ref[len(rec)]) if len(ref) > len(rec) else (rank, rec[len(ref)])
            return f"rank {longer} issued more collectives: the first extra is {extra.describe()}"
    return None
