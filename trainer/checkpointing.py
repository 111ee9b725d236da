"""Training checkpoints: save the full state atomically, resume it exactly, initialise from others.

A training checkpoint is a :func:`core.checkpoint.save_checkpoint` file (model + model config) with
``optimizer``, ``scheduler`` (the step the precomputed schedules resume at), ``scaler``, ``epoch``
(epochs completed), ``step`` (global steps completed), ``rng`` and ``train_config``.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from core.checkpoint import (
    CheckpointError,
    checkpoint_summary,
    is_release_checkpoint,
    model_from_checkpoint,
    read_checkpoint,
    save_checkpoint,
)
from core.model import SlotCon

logger = logging.getLogger(__name__)


def rng_state() -> dict[str, Any]:
    """Returns the Python, NumPy, torch CPU and (if present) CUDA RNG states as tensors/lists."""
    py_version, py_state, py_gauss = random.getstate()
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": [py_version, list(py_state), py_gauss],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restores states captured by :func:`rng_state`."""
    version, py_state, gauss = state["python"]
    random.setstate((version, tuple(py_state), gauss))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_training_state(
    path: str | Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None,
    *,
    epoch: int,
    step: int,
    train_config: dict[str, Any],
) -> Path:
    """Writes a resumable checkpoint atomically (temp file + fsync + rename). Returns the path."""
    return save_checkpoint(
        path,
        model,
        optimizer=optimizer.state_dict(),
        scheduler={"step": step},
        scaler=scaler.state_dict() if scaler is not None else None,
        epoch=epoch,
        step=step,
        rng=rng_state(),
        train_config=train_config,
    )


def load_training_state(
    path: str | Path, model: SlotCon, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None
) -> dict[str, Any]:
    """Restores model (student, teacher, centre), optimiser, scaler and RNG from ``path``.

    Returns ``{"epoch", "step", "train_config"}``. A release full checkpoint restores the weights (and
    its optimiser state when the layouts match) and continues at its epoch. Raises CheckpointError.
    """
    ckpt = read_checkpoint(path)
    if is_release_checkpoint(ckpt):
        src = model_from_checkpoint(ckpt)
        model.load_state_dict(src.state_dict())
        epoch = int(ckpt.get("epoch", 0))
        logger.info("resumed weights from release checkpoint %s (epoch %d)", path, epoch)
        return {"epoch": epoch, "step": None, "train_config": None}
    if "model" not in ckpt or "optimizer" not in ckpt:
        raise CheckpointError(f"{path} is not a training checkpoint (no optimizer state); use --init-from")
    missing, unexpected = model.load_state_dict(ckpt["model"], strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{path} does not match the model: missing {missing[:5]}, unexpected {unexpected[:5]}")
    optimizer.load_state_dict(ckpt["optimizer"])
    if scaler is not None and ckpt.get("scaler"):
        scaler.load_state_dict(ckpt["scaler"])
    if ckpt.get("rng"):
        set_rng_state(ckpt["rng"])
    logger.info("resumed from %s at epoch %d, step %d", path, ckpt["epoch"], ckpt["step"])
    return {"epoch": int(ckpt["epoch"]), "step": int(ckpt["step"]), "train_config": ckpt.get("train_config")}


def init_weights_from(path: str | Path, model: SlotCon) -> None:
    """Initialise ``model`` from our or a release checkpoint (weights and centre only, strict shapes)."""
    src = model_from_checkpoint(read_checkpoint(path))
    try:
        model.load_state_dict(src.state_dict())
    except RuntimeError as e:
        raise CheckpointError(f"--init-from {path}: architecture differs from the config: {e}") from e
    logger.info("initialised weights from %s", path)


def find_auto_resume(output_dir: str | Path) -> Path | None:
    """Returns the newest of ``current.pth`` and ``ckpt_epoch_N.pth`` in ``output_dir`` (by step, read from
    their sidecars), or None."""
    out = Path(output_dir)
    candidates = [p for p in [out / "current.pth", *out.glob("ckpt_epoch_*.pth")] if p.is_file()]
    best, best_step = None, -1
    for p in candidates:
        try:
            step = checkpoint_summary(p)["step"]
            step = -1 if step is None else int(step)
        except CheckpointError as e:
            logger.warning("ignoring unreadable checkpoint %s: %s", p, e)
            continue
        if step > best_step:
            best, best_step = p, step
    return best
