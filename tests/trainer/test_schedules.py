"""Schedules match their formulas (docs/method.md §5) and the release's warm-up + cosine scheduler."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from trainer.schedules import lr_schedule, teacher_momentum_schedule


@pytest.mark.parametrize(("total", "warmup"), [(100, 10), (37, 0), (50, 50)])
def test_lr_schedule_formula(total: int, warmup: int) -> None:
    lr, final, mult = 0.8, 1e-6, 100.0
    got = lr_schedule(lr, total, warmup, final, mult)
    assert got.shape == (total,)
    for i in range(total):
        if i < warmup:
            want = lr / mult * ((mult - 1) * i / warmup + 1)
        else:
            want = final + (lr - final) * (1 + math.cos(math.pi * (i - warmup) / max(total - warmup, 1))) / 2
        assert got[i] == pytest.approx(want, rel=1e-12)
    if warmup:
        assert got[0] == pytest.approx(lr / mult)
    assert got.max() <= lr + 1e-12


def test_lr_schedule_matches_torch_cosine_after_warmup() -> None:
    """The cosine part equals torch's CosineAnnealingLR (what the release steps per iteration)."""
    total, warmup, lr = 60, 12, 0.5
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total - warmup, eta_min=1e-6)
    torch_lrs = []
    for _ in range(total - warmup):
        torch_lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    np.testing.assert_allclose(lr_schedule(lr, total, warmup)[warmup:], torch_lrs, rtol=1e-9)


def test_teacher_momentum_formula() -> None:
    m0, total = 0.99, 200
    got = teacher_momentum_schedule(m0, total)
    want = [1 - (1 - m0) * (math.cos(math.pi * t / total) + 1) / 2 for t in range(total)]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-15)
    assert got[0] == pytest.approx(m0)
    assert np.all(np.diff(got) >= 0) and got[-1] < 1.0
