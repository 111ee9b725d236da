"""Joining the torchrun process group, and telling a failed collective from other errors."""

from __future__ import annotations

import os
from datetime import timedelta

import torch
import torch.distributed as dist

from core.distributed import is_distributed


def init_distributed(device: str, timeout_minutes: float = 10.0) -> tuple[torch.device, int]:
    """Join the torchrun process group when launched by torchrun; returns (device, local rank).

    Every collective of the group fails after ``timeout_minutes`` instead of waiting for ever, so ranks that
    disagree end with an error that names where they were (see :class:`trainer.collectives.CollectiveRecorder`).
    """
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if int(os.environ.get("WORLD_SIZE", 1)) > 1 and not is_distributed():
        if use_cuda:
            torch.cuda.set_device(local_rank)
        backend, timeout = "nccl" if use_cuda else "gloo", timedelta(minutes=timeout_minutes)
        restart = os.environ.get("TORCHELASTIC_RESTART_COUNT")
        if restart is not None and os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True":
            # torchrun restarted the workers (--max-restarts): their group's keys go under this attempt's prefix,
            # so no rank reads an address a dead attempt left in the agent's store
            world, rank = int(os.environ["WORLD_SIZE"]), int(os.environ["RANK"])
            store = dist.TCPStore(
                os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world, is_master=False, timeout=timeout
            )
            prefixed = dist.PrefixStore(f"slotcon/attempt-{restart}", store)
            dist.init_process_group(backend, store=prefixed, rank=rank, world_size=world, timeout=timeout)
        else:
            dist.init_process_group(backend=backend, timeout=timeout)
    dev = torch.device(f"cuda:{local_rank}" if use_cuda else "cpu")
    if use_cuda:
        torch.cuda.set_device(dev)
        torch.backends.cudnn.benchmark = True
    return dev, local_rank


#: Words of the errors that gloo and NCCL raise when a collective fails or times out.
_COLLECTIVE_FAILURE_WORDS = ("gloo", "nccl", "timed out", "connection closed", "connection reset", "watchdog")


def is_collective_failure(e: BaseException) -> bool:
    """True when ``e`` is a collective that failed or timed out (gloo, NCCL), not an error of the step itself."""
    text = str(e).lower()
    return isinstance(e, dist.DistError) or any(w in text for w in _COLLECTIVE_FAILURE_WORDS)


def first_line(e: BaseException) -> str:
    """The first non-empty line of ``e``'s message (at most 300 characters), or its type's name."""
    lines = [s for s in str(e).strip().splitlines() if s.strip()]
    return lines[0][:300] if lines else type(e).__name__
