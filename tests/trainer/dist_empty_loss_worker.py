"""Worker for test_distributed.py: one rank of a 2-process gloo group taking two optimiser steps on the slot
loss alone, with a real slot predictor (BatchNorm1d; SyncBatchNorm on CUDA, as the trainer converts it) inside
DDP, where some ranks' batches have no prototype shared by their two views.

Usage: ``python dist_empty_loss_worker.py DEVICE MODE OUT_DIR`` with RANK, WORLD_SIZE, MASTER_ADDR,
MASTER_PORT set; DEVICE ``cpu`` (per-rank BatchNorm), ``cpu-sync`` (core.syncbn's SyncBatchNorm on CPU ranks) or
``cuda`` (every rank on GPU 0), MODE ``one-empty`` (rank 0 shares nothing)
or ``all-empty``. Saves the predictor's parameters, the losses and the collectives issued (op, shapes, phase) to
``OUT_DIR/rank{r}.pt``.
"""

from __future__ import annotations

import sys
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn

from core.heads import SlotPredictor
from core.losses import slot_contrastive_loss
from core.syncbn import convert_sync_batchnorm
from trainer.collectives import CollectiveRecorder

B, K, D, H, STEPS = 4, 6, 8, 3, 2


class SlotLoss(nn.Module):
    """The slot loss as a module, so DDP sees one forward per backward (as it sees SlotCon's)."""

    def __init__(self) -> None:
        super().__init__()
        self.predictor_slot = SlotPredictor(D, 16)

    def forward(self, ss: torch.Tensor, ts: torch.Tensor, sd: torch.Tensor, td: torch.Tensor) -> torch.Tensor:
        return slot_contrastive_loss(ss, ts, sd, td, self.predictor_slot, tau=0.2)


def disjoint_dots(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Student dots with prototype 0 everywhere, teacher dots with prototype 1 everywhere: nothing shared."""
    sd, td = torch.zeros(B, K, H, H, device=device), torch.zeros(B, K, H, H, device=device)
    sd[:, 0], td[:, 1] = 1.0, 1.0
    return sd, td


def main() -> None:
    device_name, mode, out_dir = sys.argv[1:4]
    # one DDP bucket per parameter (as in a full-size model, whose predictor spans several buckets)
    bucket_mb = float(sys.argv[4]) if len(sys.argv) > 4 else None
    dist.init_process_group("gloo", timeout=timedelta(seconds=60))  # a hang fails within a minute
    rank = dist.get_rank()
    recorder = CollectiveRecorder(keep=True)
    recorder.attach()
    device = torch.device("cuda", 0) if device_name == "cuda" else torch.device("cpu")
    torch.manual_seed(0)
    module = SlotLoss()
    if device.type == "cuda":
        module = nn.SyncBatchNorm.convert_sync_batchnorm(module)
    elif device_name == "cpu-sync":
        module = convert_sync_batchnorm(module)
    module.to(device)
    extra = {"bucket_cap_mb": bucket_mb} if bucket_mb else {}
    net = nn.parallel.DistributedDataParallel(module, device_ids=[0] if device.type == "cuda" else None, **extra)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    g = torch.Generator().manual_seed(1 + rank)
    losses = []
    for step in range(STEPS):
        ss, ts = (torch.randn(B, K, D, generator=g).to(device) for _ in range(2))
        if rank == 0 or mode == "all-empty":
            sd, td = disjoint_dots(device)
        else:
            sd, td = (torch.randn(B, K, H, H, generator=g).to(device) for _ in range(2))
        recorder.set(step, "forward")
        loss = net(ss, ts, sd, td)
        opt.zero_grad()
        recorder.set(step, "backward")
        loss.backward()
        opt.step()
        losses.append(float(loss))
    params = {n: p.detach().cpu().clone() for n, p in module.named_parameters()}
    ops = [(e.op, e.shapes, e.step, e.phase) for e in recorder.entries]
    torch.save({"params": params, "losses": losses, "ops": ops}, f"{out_dir}/rank{rank}.pt")
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
