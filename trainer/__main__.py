"""SlotCon pretraining: ``slotcon train`` / ``python -m trainer``. The same code runs everywhere.

One CPU (the demo; data from ``slotcon synth --out data/synthetic``)::

    python -m trainer --preset cpu-demo --data data/synthetic --output-dir runs/cpu-demo

One GPU::

    python -m trainer --preset coco-r50-800ep --data /data/coco --output-dir runs/coco --device cuda

8 GPUs on one node (batch 512 in total, 64 per GPU)::

    torchrun --standalone --nproc_per_node=8 -m trainer --preset coco-r50-800ep --data /data/coco \\
        --output-dir runs/coco

2 nodes × 8 GPUs (run on each node; NODE_RANK 0 and 1, HOST = the first node's address)::

    torchrun --nnodes=2 --nproc_per_node=8 --node_rank=$NODE_RANK --rdzv_backend=c10d \\
        --rdzv_endpoint=$HOST:29500 --rdzv_id=slotcon -m trainer --preset coco-r50-800ep \\
        --data /data/coco --output-dir runs/coco

2 CPU processes (gloo, for tests): ``torchrun --standalone --nproc_per_node=2 -m trainer --preset cpu-demo
--threads 1 ...``. Resume with ``--resume runs/coco/current.pth`` or ``--auto-resume``. SIGTERM/SIGINT
save ``current.pth`` and exit 0; ``--max-steps`` caps a run; ``--print-config`` shows the resolved config.

``--precision auto`` (the default) takes bf16 where the hardware computes it natively (CUDA with bf16,
AVX-512 BF16 / AMX CPUs), fp16 with the grad scaler on older GPUs and fp32 elsewhere; the choice and its
reason go to the first log line, ``config.yaml`` and the checkpoints. ``--budget-minutes M`` times the
first steps and then fixes the total number of steps (at most the epochs allow) so that training ends
within M minutes with every schedule (warm-up, cosine lr, teacher momentum to 1) completed; the fixed
total is recorded, so ``--resume`` continues exactly. ``--print-plan`` prints the precision and budget a
run would use on this machine, without training.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml

logger = logging.getLogger("trainer")


def plan(cfg) -> dict:  # noqa: ANN001 - a TrainConfig; trainer.config is imported lazily
    """Returns what a run of ``cfg`` would use on this machine, before it starts: the machine, the precision
    ``auto`` resolves to and why, the time budget and the most steps the epochs allow (``--print-plan``)."""
    import torch

    from trainer.precision import describe_machine, resolve_precision

    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    cuda = cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available())
    precision, reason = resolve_precision(cfg.precision, "cuda" if cuda else "cpu")
    return {
        **describe_machine(),
        "device": "cuda" if cuda else "cpu",
        "precision": precision,
        "precision_reason": reason,
        "budget_minutes": cfg.budget_minutes,
        "epochs": cfg.epochs,
        "batch_size": cfg.batch_size,
        "image_size": cfg.image_size,
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Parse flags, resolve the config and train; returns the exit code (0 finished or stopped, 1 crash,
    2 bad input: data, checkpoint, unreadable image; 3 non-finite loss)."""
    from core.checkpoint import CheckpointError
    from core.distributed import get_rank, is_distributed
    from trainer.config import get_args_parser, resolve_config
    from trainer.data import DataError
    from trainer.engine import EXIT_DATA, Trainer
    from trainer.metrics import MetricsWriter, setup_logging

    parser = get_args_parser()
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        cfg = resolve_config(args)
    except (ValueError, OSError, yaml.YAMLError) as e:
        parser.error(str(e))
    if args.print_config:
        print(yaml.safe_dump(cfg.to_dict(), sort_keys=True), end="")
        return 0
    if args.print_plan:
        print(json.dumps(plan(cfg)))
        return 0
    out = Path(cfg.output_dir)
    rank = int(os.environ.get("RANK", 0))
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
    setup_logging(out if rank == 0 else None, rank)
    try:
        trainer = Trainer(cfg)
        return trainer.run()
    except (DataError, CheckpointError) as e:
        logger.error("%s", e)
        if rank == 0:
            MetricsWriter(out / "metrics.jsonl", 0, cfg.epochs, "log").event("failed", step=0, message=str(e))
        return EXIT_DATA
    except Exception as e:  # noqa: BLE001 - record any crash in metrics.jsonl for the job runner
        logger.exception("training failed")
        if rank == 0:
            MetricsWriter(out / "metrics.jsonl", 0, cfg.epochs, "log").event(
                "failed", message=f"{type(e).__name__}: {e}"
            )
        return 1
    finally:
        if is_distributed():
            import torch.distributed as dist

            if get_rank() == 0:
                logger.info("shutting down the process group")
            dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
