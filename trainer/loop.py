"""The training loop's state between steps: the time budget's probe, the log window, the batches in step order.

Everything here is per rank; the loop's decisions read it only through the step's agreement
(:mod:`trainer.consensus`).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field

import torch

#: Budgeted runs: untimed steps first (loader and allocator warm-up), then steps timed until both bounds hold.
#: The window is long (30 s) because the budget takes the median of its steps: on a shared machine a short
#: window is moved by another process's burst of load.
BUDGET_WARMUP_STEPS, BUDGET_MIN_TIMED_STEPS, BUDGET_MIN_TIMED_S, BUDGET_MAX_TIMED_STEPS = 2, 5, 30.0, 200
#: Seconds kept back for the final checkpoints, and the share of the rest that the plan uses.
BUDGET_RESERVE_S, BUDGET_SAFETY = 5.0, 0.97


def budget_total(step: int, remaining_s: float, step_seconds: float, full_steps: int) -> int:
    """The total a budget fixes at ``step``: the steps that fit in ``BUDGET_SAFETY`` of the seconds left at
    ``step_seconds`` each, never more than the epochs allow (``full_steps``)."""
    return min(full_steps, step + max(int(BUDGET_SAFETY * remaining_s / step_seconds), 0))


@dataclass
class BudgetProbe:
    """The step times a ``--budget-minutes`` run measures before it fixes its total: untimed warm-up steps,
    then each step's duration on the trainer's clock. Its median is the measure, so a burst of load from another
    process, or one slow step, does not shrink the whole run."""

    warm: int = 0
    last: float | None = None
    durations: list[float] = field(default_factory=list)

    def observe(self, now: float) -> bool:
        """Counts one step that ended at ``now``; True once enough steps were timed (on this rank)."""
        if self.last is None:
            self.warm += 1
            if self.warm >= BUDGET_WARMUP_STEPS:
                self.last = now
            return False
        self.durations.append(now - self.last)
        self.last = now
        timed, seconds = len(self.durations), sum(self.durations)
        return (timed >= BUDGET_MIN_TIMED_STEPS and seconds >= BUDGET_MIN_TIMED_S) or timed >= BUDGET_MAX_TIMED_STEPS

    def median(self) -> float:
        """The median timed step in seconds (0 before any was timed)."""
        return statistics.median(self.durations) if self.durations else 0.0


@dataclass
class LogWindow:
    """The steps since the last log line: their count, wall time and time waiting for data."""

    start: float = field(default_factory=time.perf_counter)
    steps: int = 0
    wait: float = 0.0


@dataclass
class LoopState:
    """The loop's state between steps, on this rank's clock (decisions read only their agreed form)."""

    start: float  # the trainer's clock when the loop began
    last_log: float
    last_save: float
    window: LogWindow = field(default_factory=LogWindow)
    probe: BudgetProbe = field(default_factory=BudgetProbe)
    stopped: bool = False  # a stop was agreed (signal, --max-minutes) and current.pth written


@dataclass
class StepResult:
    """One forward and backward on this rank: the model's outputs and what this rank saw of their finiteness."""

    out: dict[str, torch.Tensor]
    forward_nonfinite: bool
    nonfinite: bool
    buffers: list[torch.Tensor]


class BatchStream:
    """The training batches in step order across epochs: each epoch's sampler starts where the run stands, so
    a resumed run gets exactly the batches an uninterrupted one would have had."""

    def __init__(self, loader: torch.utils.data.DataLoader, sampler, steps_per_epoch: int) -> None:  # noqa: ANN001
        self.loader, self.sampler, self.steps_per_epoch = loader, sampler, steps_per_epoch
        self.epoch: int | None = None
        self.it = None

    def batch(self, step: int):  # noqa: ANN201 - the collated (crops, coords, flags)
        """The batch of global step ``step``; steps must be asked for in order. Raises StopIteration when the
        loader ends early and whatever the loader raises (ImageReadError for an unreadable image)."""
        epoch = step // self.steps_per_epoch
        if self.it is None or epoch != self.epoch:
            self.sampler.set_epoch(epoch, step - epoch * self.steps_per_epoch)
            self.epoch, self.it = epoch, iter(self.loader)
        return next(self.it)
