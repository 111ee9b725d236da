"""Worker for test_syncbn.py: one rank of a gloo group running :class:`core.syncbn.CPUSyncBatchNorm` forward and
backward on its own slice of a shared input, with its collectives recorded.

Usage: ``python syncbn_worker.py INPUTS.pt OUT_DIR`` with RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT set. INPUTS
holds ``x`` and ``g`` (the whole batch and the gradient of the output), ``sizes`` (each rank's rows) and the
layer's initial ``state``. Saves the output, the gradients, the running statistics and the collectives.
"""

from __future__ import annotations

import sys
from datetime import timedelta

import torch
import torch.distributed as dist

from core.syncbn import CPUSyncBatchNorm
from trainer.collectives import CollectiveRecorder


def main() -> None:
    inputs, out_dir = torch.load(sys.argv[1], weights_only=True), sys.argv[2]
    dist.init_process_group("gloo", timeout=timedelta(seconds=60))
    rank = dist.get_rank()
    recorder = CollectiveRecorder(keep=True)
    recorder.attach()
    sizes = inputs["sizes"]
    lo, hi = sum(sizes[:rank]), sum(sizes[: rank + 1])
    x = inputs["x"][lo:hi].clone().requires_grad_(True)
    layer = CPUSyncBatchNorm(x.shape[1], momentum=0.3)
    layer.load_state_dict(inputs["state"])
    recorder.set(0, "forward")
    y = layer(x)
    recorder.set(0, "backward")
    (y * inputs["g"][lo:hi]).sum().backward()
    torch.save(
        {
            "y": y.detach(),
            "grad_x": x.grad,
            "grad_w": layer.weight.grad,
            "grad_b": layer.bias.grad,
            "running_mean": layer.running_mean,
            "running_var": layer.running_var,
            "ops": [(e.op, e.shapes, e.phase) for e in recorder.entries],
        },
        f"{out_dir}/rank{rank}.pt",
    )
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
