"""LARS (You et al., 2017) as in the SlotCon / BYOL releases, with multi-tensor (foreach) kernels.

For every parameter p with gradient g (docs/method.md §5)::

    dp = g + wd·p                        # unless p is 1-D (biases, norm weights)
    q  = η·‖p‖/‖dp‖ if ‖p‖ > 0 and ‖dp‖ > 0 else 1   # unless p is 1-D
    mu = momentum·mu + q·dp
    p  = p − lr·mu
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch.optim import Optimizer


class LARS(Optimizer):
    """Layer-wise adaptive rate scaling; 1-D parameters get neither weight decay nor adaptation."""

    def __init__(
        self,
        params: Iterable,
        lr: float = 0.0,
        weight_decay: float = 0.0,
        momentum: float = 0.9,
        eta: float = 0.001,
        foreach: bool = True,
    ) -> None:
        defaults = dict(lr=lr, weight_decay=weight_decay, momentum=momentum, eta=eta, foreach=foreach)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):  # noqa: ANN001 - torch's Optimizer signature
        """Performs one update; returns the closure's loss (or None)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            adapt = [p for p in params if p.ndim > 1]
            flat = [p for p in params if p.ndim <= 1]
            for ps, is_adapted in ((adapt, True), (flat, False)):
                if ps:
                    self._update(ps, group, is_adapted)
        return loss

    def _update(self, params: list[torch.Tensor], group: dict, adapted: bool) -> None:
        grads = [p.grad for p in params]
        bufs = []
        for p in params:
            state = self.state[p]
            if "mu" not in state:
                state["mu"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            bufs.append(state["mu"])
        if group["foreach"]:
            if adapted:
                dp = (
                    torch._foreach_add(grads, params, alpha=group["weight_decay"])
                    if group["weight_decay"]
                    else [g.clone() for g in grads]
                )
                p_norm = torch.stack(torch._foreach_norm(params))  # (n,)
                d_norm = torch.stack(torch._foreach_norm(dp))  # (n,)
                q = torch.where((p_norm > 0) & (d_norm > 0), group["eta"] * p_norm / d_norm, torch.ones_like(p_norm))
                torch._foreach_mul_(dp, list(q.to(dp[0].dtype).unbind(0)))
            else:
                dp = grads
            torch._foreach_mul_(bufs, group["momentum"])
            torch._foreach_add_(bufs, dp)
            torch._foreach_add_(params, bufs, alpha=-group["lr"])
            return
        for p, g, mu in zip(params, grads, bufs, strict=True):
            dp = g
            if adapted:
                dp = g.add(p, alpha=group["weight_decay"])
                pn, dn = torch.norm(p), torch.norm(dp)
                q = torch.where((pn > 0) & (dn > 0), group["eta"] * pn / dn, torch.ones_like(pn))
                dp = dp.mul(q)
            mu.mul_(group["momentum"]).add_(dp)
            p.add_(mu, alpha=-group["lr"])
