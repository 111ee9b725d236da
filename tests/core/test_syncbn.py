"""The CPU stand-in for SyncBatchNorm: BatchNorm over every rank's batch at once, with PyTorch's collectives."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from core.syncbn import CPUSyncBatchNorm, convert_sync_batchnorm, synchronises

WORKER = str(Path(__file__).parent / "syncbn_worker.py")


@pytest.mark.parametrize(
    ("shape", "sizes"),
    [((6, 5, 3), [2, 4, 0]), ((5,), [3, 2])],  # (C, H, W) maps with an empty rank; (C,) vectors (the predictor)
    ids=["maps-3-ranks-one-empty", "vectors-2-ranks"],
)
def test_equals_batchnorm_over_the_concatenation_with_pytorchs_collectives(
    shape: tuple, sizes: list[int], tmp_path: Path, run_ranks
) -> None:
    g = torch.Generator().manual_seed(0)
    n = sum(sizes)
    x = torch.randn(n, *shape, generator=g) * 3 + 1
    grad = torch.randn(n, *shape, generator=g)
    ref = nn.BatchNorm1d(shape[0], momentum=0.3) if len(shape) <= 2 else nn.BatchNorm2d(shape[0], momentum=0.3)
    with torch.no_grad():
        ref.weight.copy_(torch.rand(shape[0], generator=g) + 0.5)
        ref.bias.copy_(torch.randn(shape[0], generator=g))
    torch.save({"x": x, "g": grad, "sizes": sizes, "state": ref.state_dict()}, tmp_path / "inputs.pt")
    results = run_ranks([WORKER, str(tmp_path / "inputs.pt"), str(tmp_path)], tmp_path, world=len(sizes))

    xr = x.clone().requires_grad_(True)
    y = ref(xr)
    (y * grad).sum().backward()
    lo = 0
    for size, res in zip(sizes, results, strict=True):
        torch.testing.assert_close(res["y"], y[lo : lo + size].detach(), rtol=1e-5, atol=1e-5)
        if size:  # an empty rank's input gets no gradient, as with PyTorch's
            torch.testing.assert_close(res["grad_x"], xr.grad[lo : lo + size], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(res["running_mean"], ref.running_mean, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(res["running_var"], ref.running_var, rtol=1e-5, atol=1e-6)
        lo += size
    # weight and bias gradients are per rank (DDP sums them): their sum is the whole batch's
    grad_w = sum(r["grad_w"] for r in results if r["grad_w"] is not None)
    grad_b = sum(r["grad_b"] for r in results if r["grad_b"] is not None)
    torch.testing.assert_close(grad_w, ref.weight.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(grad_b, ref.bias.grad, rtol=1e-4, atol=1e-5)
    c = shape[0]
    for res in results:  # as PyTorch's CUDA SyncBatchNorm: one all-gather forward, one all-reduce backward
        assert res["ops"] == [("ALLGATHER", [[2 * c + 1]], "forward"), ("ALLREDUCE", [[2 * c]], "backward")]


def test_converts_every_batchnorm_and_keeps_its_state() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4)))
    with torch.no_grad():
        model[1].running_mean.fill_(0.5)
    weight = model[1].weight
    out = convert_sync_batchnorm(model)
    layers = [m for m in out.modules() if synchronises(m)]
    assert len(layers) == 2 and all(isinstance(m, CPUSyncBatchNorm) for m in layers)
    assert out[1].weight is weight and torch.equal(out[1].running_mean, torch.full((4,), 0.5))
    x = torch.randn(8, 4)
    model_bn = nn.BatchNorm1d(4)
    model_bn.load_state_dict(out[2][1].state_dict())
    torch.testing.assert_close(out[2][1](x), model_bn(x))  # one process: plain BatchNorm
