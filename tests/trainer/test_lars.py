"""LARS: the foreach implementation equals the release's per-parameter formula."""

from __future__ import annotations

import copy

import torch
from torch import nn

from trainer.lars import LARS


def reference_lars_step(
    params: list[torch.Tensor], bufs: list[torch.Tensor], lr: float, wd: float, momentum: float, eta: float
) -> None:
    """The release's update, written out per parameter."""
    for p, mu in zip(params, bufs, strict=True):
        dp = p.grad.clone()
        if p.ndim != 1:
            dp = dp + wd * p
            pn, dn = p.norm(), dp.norm()
            q = eta * pn / dn if pn > 0 and dn > 0 else 1.0
            dp = dp * q
        mu.mul_(momentum).add_(dp)
        p.data.add_(mu, alpha=-lr)


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 4 * 4, 5))


def test_lars_matches_reference_and_skips_1d() -> None:
    net_a, net_b = _net(), _net()
    opt = LARS(net_a.parameters(), lr=0.7, weight_decay=1e-2, momentum=0.9, eta=0.001)
    ref_params = list(net_b.parameters())
    bufs = [torch.zeros_like(p) for p in ref_params]
    x = torch.randn(4, 3, 6, 6)
    for _ in range(3):
        for net in (net_a, net_b):
            net.zero_grad()
            net(x).pow(2).mean().backward()
        opt.step()
        with torch.no_grad():
            reference_lars_step(ref_params, bufs, 0.7, 1e-2, 0.9, 0.001)
    for pa, pb in zip(net_a.parameters(), net_b.parameters(), strict=True):
        torch.testing.assert_close(pa, pb, rtol=1e-5, atol=1e-7)


def test_lars_foreach_equals_loop_and_state_roundtrip() -> None:
    net_a, net_b = _net(), _net()
    opt_a = LARS(net_a.parameters(), lr=0.3, weight_decay=1e-5, foreach=True)
    opt_b = LARS(net_b.parameters(), lr=0.3, weight_decay=1e-5, foreach=False)
    x = torch.randn(4, 3, 6, 6)
    for net, opt in ((net_a, opt_a), (net_b, opt_b)):
        for _ in range(2):
            net.zero_grad()
            net(x).sum().backward()
            opt.step()
    for pa, pb in zip(net_a.parameters(), net_b.parameters(), strict=True):
        torch.testing.assert_close(pa, pb)
    clone = LARS(copy.deepcopy(net_a).parameters(), lr=0.3)
    clone.load_state_dict(opt_a.state_dict())
    assert len(clone.state) == len(opt_a.state)
