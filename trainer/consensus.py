"""The one agreement per step: every decision that leads to a collective, taken by all ranks together.

Ranks see different things: their own clock, their own batch, their own signals and files. A decision that
one rank takes on its own view and that leads to a collective (log, checkpoint, budget, stop, skip) makes
the ranks issue different collectives, which hangs NCCL or reduces the wrong tensors. So after each step
every rank packs what it saw into a :class:`LocalView`, one all-reduce (max) merges them, and every branch
of the loop reads only the merged :class:`Agreed` (or the step count, which every rank shares).

Flags merge as "any rank" and numbers as "the largest": the slowest rank's step time, the longest elapsed
time, the highest rank whose next batch failed.
"""

from __future__ import annotations

from dataclasses import astuple, dataclass, fields

import torch
import torch.distributed as dist

from core.distributed import is_distributed


@dataclass(frozen=True)
class LocalView:
    """What one rank saw during a step (before any agreement)."""

    signal: int = 0  # a stop signal received (its number), 0 for none
    over_time: bool = False  # --max-minutes passed on this rank's clock
    forward_nonfinite: bool = False  # the loss (or the centre's batch mean) is not finite here
    nonfinite: bool = False  # the loss or a gradient is not finite here
    failed_rank: int = -1  # this rank's number when its next batch could not be loaded, else -1
    log_due: bool = False  # --log-seconds passed since the last log line on this rank's clock
    save_due: bool = False  # --save-minutes passed since the last current.pth on this rank's clock
    budget_ready: bool = False  # this rank timed enough steps to fix the time budget
    step_seconds: float = 0.0  # this rank's median timed step (the budget's measure)
    elapsed_s: float = 0.0  # seconds since the run began, on this rank's clock


@dataclass(frozen=True)
class Agreed(LocalView):
    """The views of every rank merged: each flag true when any rank's is, each number the largest."""

    @property
    def stop(self) -> bool:
        """A rank was asked to stop (signal) or ran out of time."""
        return bool(self.signal) or self.over_time


def agree(view: LocalView, device: torch.device | str = "cpu") -> Agreed:
    """Returns the merge of ``view`` over every rank (one all-reduce, max); ``view`` itself when not distributed.

    Every rank must call it at the same point of the loop: it is the step's one collective of the trainer's own
    (DDP's and SyncBatchNorm's happen inside the forward and backward)."""
    values = [float(v) for v in astuple(view)]
    if is_distributed():
        t = torch.tensor(values, dtype=torch.float64, device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        values = t.tolist()
    kinds = [f.type for f in fields(LocalView)]
    return Agreed(*[_cast(v, k) for v, k in zip(values, kinds, strict=True)])


def _cast(value: float, kind: str) -> bool | int | float:
    if kind == "bool":
        return value > 0
    if kind == "int":
        return int(round(value))
    return value
