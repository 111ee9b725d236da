"""Worker for test_distributed.py: one rank of a gloo group computing the slot loss and centre.

Usage: ``python dist_worker.py INPUTS.pt OUT_DIR`` with RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT set.
Rank r takes slice r of every input tensor (shape (world, ...)) and saves its loss, centre and the
predictor gradient to ``OUT_DIR/rank{r}.pt``.
"""

from __future__ import annotations

import sys

import torch
import torch.distributed as dist
from torch import nn

from core.losses import batch_center, slot_contrastive_loss


def main() -> None:
    inputs_path, out_dir = sys.argv[1], sys.argv[2]
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    data = torch.load(inputs_path, weights_only=True)
    predictor = nn.Linear(data["ss"].shape[-1], data["ss"].shape[-1])
    predictor.load_state_dict(data["predictor"])
    loss = slot_contrastive_loss(
        data["ss"][rank], data["ts"][rank], data["sd"][rank], data["td"][rank], predictor, tau=0.2
    )
    loss.backward()
    center = batch_center(data["td"][rank], data["td2"][rank])
    torch.save({"loss": loss.detach(), "center": center, "grad": predictor.weight.grad}, f"{out_dir}/rank{rank}.pt")
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
