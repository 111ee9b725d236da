"""Per-iteration schedules, precomputed as arrays indexed by the global step (DINO style).

- :func:`lr_schedule`: linear warm-up from ``lr / multiplier`` to ``lr``, then cosine to ``final_lr``
  (the release's GradualWarmupScheduler + CosineAnnealingLR, stepped every iteration).
- :func:`teacher_momentum_schedule`: docs/method.md §5, ``m_t = 1 − (1 − m0)·(cos(π t/T) + 1)/2``.

Because the arrays depend only on the config, a resumed run indexes them at its restored step and
continues exactly; the "scheduler state" in a checkpoint is just that step.
"""

from __future__ import annotations

import math

import numpy as np


def lr_schedule(
    base_lr: float,
    total_steps: int,
    warmup_steps: int,
    final_lr: float = 1e-6,
    warmup_multiplier: float = 100.0,
    include_end: bool = False,
) -> np.ndarray:
    """Returns (total_steps,) float64 learning rates; with ``include_end`` (total_steps + 1,), whose last
    entry is where the schedule ends after the last step (``final_lr`` once there is a cosine part).

    Step i < W: ``lr/M · ((M − 1)·i/W + 1)``; step i ≥ W: ``final + (lr − final)·(1 + cos(π (i−W)/(N−W)))/2``.
    """
    steps = np.arange(total_steps + int(include_end), dtype=np.float64)
    out = np.empty(len(steps), dtype=np.float64)
    w = min(max(int(warmup_steps), 0), total_steps)
    if w > 0:
        m = warmup_multiplier
        out[:w] = base_lr / m * ((m - 1.0) * steps[:w] / w + 1.0)
    rest = max(total_steps - w, 1)
    out[w:] = final_lr + (base_lr - final_lr) * (1.0 + np.cos(math.pi * (steps[w:] - w) / rest)) / 2.0
    return out


def teacher_momentum_schedule(base_momentum: float, total_steps: int, include_end: bool = False) -> np.ndarray:
    """Returns (total_steps,) teacher EMA momenta rising from ``m0`` towards 1 (docs/method.md §5); with
    ``include_end`` (total_steps + 1,), whose last entry is exactly 1."""
    t = np.arange(total_steps + int(include_end), dtype=np.float64)
    return 1.0 - (1.0 - base_momentum) * (np.cos(math.pi * t / max(total_steps, 1)) + 1.0) / 2.0


def run_schedules(
    base_lr: float,
    warmup_steps: int,
    final_lr: float,
    warmup_multiplier: float,
    base_momentum: float,
    total_steps: int,
    provisional_steps: int = 0,
    fixed_at: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Returns the (total_steps + 1,) lr and teacher-momentum arrays of a run; entry t is step t's value and
    the last entry the schedules' end (``final_lr``, 1).

    A run whose length was fixed while it ran (a time budget) took its first ``fixed_at`` steps on the
    schedules of ``provisional_steps`` steps; those entries are that provisional schedule's, the rest the
    schedule of ``total_steps``. Both depend only on these numbers, so a resumed run rebuilds them exactly.
    """
    lrs = lr_schedule(base_lr, total_steps, warmup_steps, final_lr, warmup_multiplier, include_end=True)
    moms = teacher_momentum_schedule(base_momentum, total_steps, include_end=True)
    if fixed_at > 0:
        if provisional_steps < fixed_at:
            raise ValueError(f"fixed_at={fixed_at} lies beyond the provisional schedule of {provisional_steps} steps")
        head = min(fixed_at, total_steps)
        lrs[:head] = lr_schedule(base_lr, provisional_steps, warmup_steps, final_lr, warmup_multiplier)[:head]
        moms[:head] = teacher_momentum_schedule(base_momentum, provisional_steps)[:head]
    return lrs, moms
