"""Per-iteration schedules, precomputed as arrays indexed by the global step (DINO style).

- :func:`lr_schedule`: linear warm-up from ``lr / multiplier`` to ``lr``, then cosine to ``final_lr``
  (the release's GradualWarmupScheduler + CosineAnnealingLR, stepped every iteration).
- :func:`teacher_momentum_schedule`: SPEC §5, ``m_t = 1 − (1 − m0)·(cos(π t/T) + 1)/2``.

Because the arrays depend only on the config, a resumed run indexes them at its restored step and
continues exactly; the "scheduler state" in a checkpoint is just that step.
"""

from __future__ import annotations

import math

import numpy as np


def lr_schedule(base_lr: float, total_steps: int, warmup_steps: int, final_lr: float = 1e-6,
                warmup_multiplier: float = 100.0) -> np.ndarray:
    """Returns (total_steps,) float64 learning rates.

    Step i < W: ``lr/M · ((M − 1)·i/W + 1)``; step i ≥ W: ``final + (lr − final)·(1 + cos(π (i−W)/(N−W)))/2``.
    """
    steps = np.arange(total_steps, dtype=np.float64)
    out = np.empty(total_steps, dtype=np.float64)
    w = min(max(int(warmup_steps), 0), total_steps)
    if w > 0:
        m = warmup_multiplier
        out[:w] = base_lr / m * ((m - 1.0) * steps[:w] / w + 1.0)
    rest = max(total_steps - w, 1)
    out[w:] = final_lr + (base_lr - final_lr) * (1.0 + np.cos(math.pi * (steps[w:] - w) / rest)) / 2.0
    return out


def teacher_momentum_schedule(base_momentum: float, total_steps: int) -> np.ndarray:
    """Returns (total_steps,) teacher EMA momenta rising from ``m0`` towards 1 (SPEC §5)."""
    t = np.arange(total_steps, dtype=np.float64)
    return 1.0 - (1.0 - base_momentum) * (np.cos(math.pi * t / max(total_steps, 1)) + 1.0) / 2.0
