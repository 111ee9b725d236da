"""Worker for test_distributed.py: one rank of a 2-process gloo group running two real training steps
(:meth:`trainer.engine.Trainer.train_step`, DDP-wrapped SlotCon) where rank 0's batch has no prototype
shared by its two views.

Usage: ``python ddp_step_worker.py DATA_ROOT OUT_DIR`` with RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT set.

How rank 0 gets no shared prototype: the teacher's prototype table is the student's rolled by one row and
the teacher never moves (momentum 1), so for the same features the teacher's argmax is the student's plus
one; rank 0's images are each of one flat colour with the two views identical, so an image shares a
prototype only when its view holds two consecutive prototypes. Before each step rank 0 draws flat-colour
batches until one shares none (checked with the student's and teacher's own forward passes, which hold no
collective). Rank 1's views are noise: many prototypes, many shared. Saves each rank's student parameters
and per-step terms to ``OUT_DIR/rank{r}.pt``.
"""

from __future__ import annotations

import sys
from datetime import timedelta

import torch
import torch.distributed as dist

from core.losses import presence_mask
from tests.trainer.conftest import TINY_MODEL_ARGS
from trainer.config import get_args_parser, resolve_config
from trainer.engine import Trainer

B, SIZE, STEPS, DRAWS = 4, 64, 2, 500


@torch.no_grad()
def shared_prototypes(model: torch.nn.Module, crops: list[torch.Tensor]) -> int:
    """Slots present in the student's view a and the teacher's view b, both directions (no collective)."""
    student = [presence_mask(model.grouping_q(model.projector_q(model.encoder_q(c)))[1]) for c in crops]
    teacher = [presence_mask(model.grouping_k(model.teacher_project(c))[1]) for c in crops]
    return int((student[0] & teacher[1]).sum() + (student[1] & teacher[0]).sum())


def flat_batch_sharing_nothing(model: torch.nn.Module, g: torch.Generator) -> list[torch.Tensor]:
    """Two identical views of B flat-colour images whose views share no prototype (raises if none is found)."""
    for _ in range(DRAWS):
        flat = (torch.rand(B, 3, 1, 1, generator=g) * 4 - 2).expand(B, 3, SIZE, SIZE).contiguous()
        if shared_prototypes(model, [flat, flat]) == 0:
            return [flat, flat.clone()]
    raise RuntimeError(f"no flat-colour batch without a shared prototype in {DRAWS} draws")


def main() -> None:
    data, out_dir = sys.argv[1], sys.argv[2]
    dist.init_process_group("gloo", timeout=timedelta(seconds=60))  # a hang fails within a minute
    rank = dist.get_rank()
    args = get_args_parser().parse_args(
        [
            "--preset",
            "cpu-demo",
            "--data",
            data,
            "--output-dir",
            f"{out_dir}/run",
            *TINY_MODEL_ARGS,
            "--num-prototypes",
            "64",
            "--image-size",
            str(SIZE),
            "--batch-size",
            str(2 * B),
            "--workers",
            "0",
            "--threads",
            "1",
            "--precision",
            "fp32",
            "--no-channels-last",
            "--teacher-momentum",
            "1.0",
            "--device",
            "cpu",
            "--progress",
            "log",
            "--budget-minutes",
            "0",
            "--no-sync-batchnorm",  # per-rank BatchNorm: the probe below runs the student on one rank alone
        ]
    )
    trainer = Trainer(resolve_config(args))
    model = trainer.model
    with torch.no_grad():
        model.grouping_k.slot_embed.weight.copy_(model.grouping_q.slot_embed.weight.roll(1, dims=0))
    g = torch.Generator().manual_seed(10 + rank)
    coords = [torch.tensor([[0.0, 0.0, 1.0, 1.0]] * B) for _ in range(2)]
    flags = [torch.zeros(B, dtype=torch.bool) for _ in range(2)]
    terms = []
    for _ in range(STEPS):
        if rank == 0:
            crops = flat_batch_sharing_nothing(model, g)
        else:
            crops = [torch.randn(B, 3, SIZE, SIZE, generator=g) for _ in range(2)]
        out = trainer.train_step((crops, coords, flags))
        trainer.step += 1
        terms.append({k: float(out[k]) for k in ("loss", "loss_slot", "positive_pairs")})
    params = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    torch.save({"params": params, "terms": terms}, f"{out_dir}/rank{rank}.pt")
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
