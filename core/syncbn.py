"""SyncBatchNorm for CPU ranks: the GPU recipe's code path on gloo processes.

The release converts every BatchNorm to ``nn.SyncBatchNorm`` for multi-GPU training, and PyTorch's
SyncBatchNorm refuses CPU tensors (its statistics kernels exist only for CUDA). :class:`CPUSyncBatchNorm`
is a BatchNorm layer that computes the same statistics with ordinary tensor operations and issues the same
collectives, in the same places, as PyTorch's CUDA implementation (``torch.nn.modules._functions``):

- forward, in training: one all-gather of each rank's ``[mean, invstd, count]`` (2C + 1 values; zeros
  with count 0 from a rank whose input is empty, which still takes part);
- backward, when the input needs a gradient: one all-reduce (sum) of ``[Σ dy, Σ dy·(x − μ)]`` (2C values;
  zeros from a rank whose input was empty, whose weight and bias then get no gradient from this layer).

So a group of CPU ranks runs, collective for collective, what a group of GPUs runs, and the normalisation
equals BatchNorm over the concatenation of every rank's batch. :func:`convert_sync_batchnorm` swaps it in
where the trainer would put ``nn.SyncBatchNorm``.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn


def _reduce_dims(x: torch.Tensor) -> list[int]:
    return [0, *range(2, x.dim())]


def _per_channel(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """(C,) → broadcastable against ``x`` (N, C, ...)."""
    return v.view(1, -1, *([1] * (x.dim() - 2)))


class _SyncBatchNormFunction(torch.autograd.Function):
    """Synchronised batch normalisation in float32 with PyTorch's collectives (see the module docstring)."""

    @staticmethod
    def forward(  # noqa: PLR0913 - the autograd signature of PyTorch's own SyncBatchNorm
        ctx,
        x: torch.Tensor,
        weight: torch.Tensor | None,
        bias: torch.Tensor | None,
        running_mean: torch.Tensor | None,
        running_var: torch.Tensor | None,
        eps: float,
        momentum: float,
        group: dist.ProcessGroup,
        world: int,
    ) -> torch.Tensor:
        c = x.shape[1]
        xf = x.float()
        local_n = x.numel() // c if c else 0
        if local_n > 0:
            mean = xf.mean(_reduce_dims(xf))  # (C,)
            var = xf.var(_reduce_dims(xf), unbiased=False)
            invstd = torch.rsqrt(var + eps)
            combined = torch.cat([mean, invstd, mean.new_full((1,), float(local_n))])  # (2C + 1,)
        else:
            combined = xf.new_zeros(2 * c + 1)
        gathered = combined.new_empty(world * (2 * c + 1))
        dist.all_gather_into_tensor(gathered, combined, group=group)
        rows = gathered.view(world, 2 * c + 1)
        rows = rows[rows[:, -1] >= 1]  # ranks with an empty input carry no statistics
        means, invstds, counts = rows[:, :c], rows[:, c : 2 * c], rows[:, 2 * c :]  # (R, C), (R, C), (R, 1)
        total = counts.sum()
        g_mean = (counts * means).sum(0) / total  # (C,)
        g_var = (counts * (invstds.pow(-2) - eps + (means - g_mean).pow(2))).sum(0) / total  # biased
        g_invstd = torch.rsqrt(g_var + eps)
        if running_mean is not None:
            running_mean.mul_(1 - momentum).add_(g_mean.to(running_mean.dtype), alpha=momentum)
        if running_var is not None:
            unbiased = g_var * total / (total - 1).clamp_min(1)
            running_var.mul_(1 - momentum).add_(unbiased.to(running_var.dtype), alpha=momentum)
        ctx.save_for_backward(x, weight, g_mean, g_invstd, total)
        ctx.group = group
        if local_n == 0:
            return torch.empty_like(x)
        y = (xf - _per_channel(g_mean, xf)) * _per_channel(g_invstd, xf)
        if weight is not None:
            y = y * _per_channel(weight.float(), xf)
        if bias is not None:
            y = y + _per_channel(bias.float(), xf)
        return y.to(x.dtype)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):  # noqa: ANN205
        x, weight, mean, invstd, total = ctx.saved_tensors
        c = x.shape[1]
        grad_in = grad_w = grad_b = None
        if x.numel() > 0:
            xf, dy = x.float(), grad_out.float()
            xmu = xf - _per_channel(mean, xf)
            sum_dy = dy.sum(_reduce_dims(dy))  # (C,)
            sum_dy_xmu = (dy * xmu).sum(_reduce_dims(dy))  # (C,)
            if weight is not None and ctx.needs_input_grad[1]:
                grad_w = (sum_dy_xmu * invstd).to(weight.dtype)
            if weight is not None and ctx.needs_input_grad[2]:
                grad_b = sum_dy.to(weight.dtype)
            if ctx.needs_input_grad[0]:
                combined = torch.cat([sum_dy, sum_dy_xmu])  # (2C,)
                dist.all_reduce(combined, op=dist.ReduceOp.SUM, group=ctx.group)
                mean_dy, mean_dy_xmu = (combined / total).split(c)
                scale = invstd if weight is None else invstd * weight.float()
                grad_in = (
                    dy - _per_channel(mean_dy, dy) - xmu * _per_channel(invstd.pow(2) * mean_dy_xmu, dy)
                ) * _per_channel(scale, dy)
                grad_in = grad_in.to(x.dtype)
        elif ctx.needs_input_grad[0]:  # an empty input still joins the peers' all-reduce
            dist.all_reduce(x.new_zeros(2 * c, dtype=torch.float32), op=dist.ReduceOp.SUM, group=ctx.group)
        return grad_in, grad_w, grad_b, None, None, None, None, None, None


class CPUSyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """``nn.SyncBatchNorm`` for CPU tensors (see the module docstring); outside training, or in a world of one,
    it is plain BatchNorm, as PyTorch's is. Not a subclass of ``nn.SyncBatchNorm``, which DDP refuses on CPU."""

    def __init__(self, *args, process_group: dist.ProcessGroup | None = None, **kwargs) -> None:  # noqa: ANN002, ANN003
        super().__init__(*args, **kwargs)
        self.process_group = process_group

    def _check_input_dim(self, input: torch.Tensor) -> None:  # noqa: A002
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, input: torch.Tensor) -> torch.Tensor:  # noqa: A002 - nn.Module's argument name
        self._check_input_dim(input)
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:
                factor = 1.0 / float(self.num_batches_tracked)
        bn_training = self.training or (self.running_mean is None and self.running_var is None)
        running_mean = self.running_mean if not self.training or self.track_running_stats else None
        running_var = self.running_var if not self.training or self.track_running_stats else None
        group = self.process_group or (dist.group.WORLD if dist.is_available() and dist.is_initialized() else None)
        world = dist.get_world_size(group) if group is not None else 1
        if not (bn_training and self.training and world > 1):
            return nn.functional.batch_norm(
                input, running_mean, running_var, self.weight, self.bias, bn_training, factor, self.eps
            )
        return _SyncBatchNormFunction.apply(
            input, self.weight, self.bias, running_mean, running_var, self.eps, factor, group, world
        )


def synchronises(module: nn.Module) -> bool:
    """True for a layer whose statistics come from every rank: ``nn.SyncBatchNorm`` or :class:`CPUSyncBatchNorm`."""
    return isinstance(module, (nn.SyncBatchNorm, CPUSyncBatchNorm))


def convert_sync_batchnorm(module: nn.Module) -> nn.Module:
    """Returns ``module`` with every BatchNorm layer replaced by :class:`CPUSyncBatchNorm` (parameters,
    buffers, ``requires_grad`` and training mode carried over), as ``nn.SyncBatchNorm.convert_sync_batchnorm``
    does with PyTorch's class."""
    out = module
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, CPUSyncBatchNorm):
        out = CPUSyncBatchNorm(
            module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats
        )
        if module.affine:
            out.weight, out.bias = module.weight, module.bias
        out.running_mean = module.running_mean
        out.running_var = module.running_var
        out.num_batches_tracked = module.num_batches_tracked
        out.training = module.training
    for name, child in module.named_children():
        out.add_module(name, convert_sync_batchnorm(child))
    return out
