"""SlotCon pretraining: ``slotcon train`` / ``python -m trainer``; the launch commands are in
:mod:`trainer.usage` (``--help`` shows them)."""

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
    from trainer.config import get_args_parser, resolve_config, selected_preset
    from trainer.data import DataError
    from trainer.engine import EXIT_DATA, Trainer
    from trainer.metrics import MetricsWriter, setup_logging

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = get_args_parser(preset=selected_preset(argv))
    args = parser.parse_args(argv)
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
