"""Training checkpoints: save the full state atomically, resume it exactly, initialise from others.

A training checkpoint is a :func:`core.checkpoint.save_checkpoint` file (model + model config) with
``optimizer``, ``scheduler`` (the step the precomputed schedules resume at), ``scaler``, ``epoch``
(epochs completed), ``step`` (global steps completed), ``world_size``, ``rng`` and ``train_config``.

Resuming restores everything it can and names, in one log line, what it could not: from this project's
checkpoints everything; from the release's full checkpoints the weights, the optimiser's momentum buffers
(its state is indexed by the release model's parameter order, read from its state dict's keys, and each
buffer is checked against the parameter's shape), the grad scaler and the epoch.
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
    world_size: int = 1,
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
        world_size=world_size,
        rng=rng_state(),
        train_config=train_config,
    )


#: Buffers in a model's state dict (not parameters, so not indexed by the optimiser).
_BUFFER_SUFFIXES = (".running_mean", ".running_var", ".num_batches_tracked")
#: The per-parameter momentum each optimiser keeps (LARS here and in the release; torch's SGD).
_MOMENTUM_KEYS = ("mu", "momentum_buffer")


def release_parameter_names(model_state: dict[str, Any]) -> list[str]:
    """The release model's parameter names (``module.`` stripped) in its parameter order, the order that indexes
    its optimiser's state: the state dict's keys less its buffers (BatchNorm statistics, ``center``)."""
    names = [k.removeprefix("module.") for k in model_state]
    return [n for n in names if n != "center" and not n.endswith(_BUFFER_SUFFIXES)]


def restore_release_momentum(
    opt_state: dict[str, Any], names: list[str], model: torch.nn.Module, optimizer: torch.optim.Optimizer
) -> tuple[int, list[str]]:
    """Copies the momentum buffers of a release optimiser state into ``optimizer`` (parameters mapped through
    ``names``, each buffer checked against its parameter's shape). Returns (buffers restored, problems)."""
    indices = [int(i) for g in opt_state.get("param_groups", []) for i in g.get("params", [])]
    if len(indices) != len(names):
        return 0, [f"optimizer (it indexes {len(indices)} parameters, the release model has {len(names)})"]
    by_index = dict(zip(indices, names, strict=True))
    params = dict(model.named_parameters())
    trained = {id(p) for g in optimizer.param_groups for p in g["params"]}
    key = "mu" if "mu" in _expected_state(optimizer) else "momentum_buffer"
    restored, problems = 0, []
    for index, state in opt_state.get("state", {}).items():
        name = by_index.get(int(index))
        buf = next((state[k] for k in _MOMENTUM_KEYS if k in state), None)
        p = params.get(name or "")
        if p is None or id(p) not in trained or buf is None:
            problems.append(f"momentum of {name or index} (not a trained parameter here)")
        elif tuple(buf.shape) != tuple(p.shape):
            problems.append(f"momentum of {name} (shape {tuple(buf.shape)}, the parameter's {tuple(p.shape)})")
        else:
            optimizer.state[p][key] = buf.detach().to(device=p.device, dtype=p.dtype).clone()
            restored += 1
    return restored, problems


def _expected_state(optimizer: torch.optim.Optimizer) -> tuple[str, ...]:
    from trainer.lars import LARS

    return ("mu",) if isinstance(optimizer, LARS) else ("momentum_buffer",)


def load_training_state(
    path: str | Path, model: SlotCon, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None
) -> dict[str, Any]:
    """Restores model (student, teacher, centre), optimiser, scaler and RNG from ``path``.

    Returns ``{"epoch", "step", "train_config", "world_size", "restored", "missing"}`` (``step`` None for a
    release checkpoint: it continues at the start of its next epoch; ``restored``/``missing``: what was and was
    not restored, also logged in one line). Raises CheckpointError.
    """
    ckpt = read_checkpoint(path)
    if is_release_checkpoint(ckpt):
        return _load_release_state(path, ckpt, model, optimizer, scaler)
    if "model" not in ckpt or "optimizer" not in ckpt:
        raise CheckpointError(f"{path} is not a training checkpoint (no optimizer state); use --init-from")
    missing, unexpected = model.load_state_dict(ckpt["model"], strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{path} does not match the model: missing {missing[:5]}, unexpected {unexpected[:5]}")
    restored, not_restored = ["weights", "centre"], []
    try:
        optimizer.load_state_dict(ckpt["optimizer"])
        restored.append("optimizer")
    except (ValueError, KeyError) as e:
        not_restored.append(f"optimizer ({e})")
    _restore_scaler(ckpt, scaler, restored, not_restored)
    if ckpt.get("rng"):
        set_rng_state(ckpt["rng"])
        restored.append("RNG")
    restored.append("epoch and step")
    _log_resume(path, int(ckpt["epoch"]), int(ckpt["step"]), restored, not_restored)
    return {
        "epoch": int(ckpt["epoch"]),
        "step": int(ckpt["step"]),
        "train_config": ckpt.get("train_config"),
        "world_size": ckpt.get("world_size"),
        "restored": restored,
        "missing": not_restored,
    }


def _load_release_state(
    path: str | Path,
    ckpt: dict[str, Any],
    model: SlotCon,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None,
) -> dict[str, Any]:
    src = model_from_checkpoint(ckpt)
    try:
        model.load_state_dict(src.state_dict())
    except RuntimeError as e:
        raise CheckpointError(f"{path}: the release model differs from this run's config: {e}") from e
    epoch = int(ckpt.get("epoch", 0))
    restored, not_restored = ["weights", "centre", f"epoch ({epoch} completed)"], []
    if isinstance(ckpt.get("optimizer"), dict):
        count, problems = restore_release_momentum(
            ckpt["optimizer"], release_parameter_names(ckpt["model"]), model, optimizer
        )
        if count:
            restored.append(f"optimizer momentum ({count} buffers)")
        not_restored += problems
    else:
        not_restored.append("optimizer (none in the checkpoint)")
    _restore_scaler(ckpt, scaler, restored, not_restored)
    not_restored.append("RNG (the release saves none)")
    _log_resume(path, epoch, None, restored, not_restored)
    return {
        "epoch": epoch,
        "step": None,
        "train_config": None,
        "world_size": None,
        "restored": restored,
        "missing": not_restored,
    }


def _restore_scaler(
    ckpt: dict[str, Any], scaler: torch.amp.GradScaler | None, restored: list[str], not_restored: list[str]
) -> None:
    """Loads the checkpoint's grad scaler into ``scaler``, noting in ``restored``/``not_restored`` what happened."""
    if scaler is not None and ckpt.get("scaler"):
        scaler.load_state_dict(ckpt["scaler"])
        restored.append("grad scaler")
    elif scaler is not None:
        not_restored.append("grad scaler (none in the checkpoint: it was not trained in fp16)")
    elif ckpt.get("scaler"):
        not_restored.append("grad scaler (this run trains without one)")


def _log_resume(path: str | Path, epoch: int, step: int | None, restored: list[str], missing: list[str]) -> None:
    at = f"epoch {epoch}" + (f", step {step}" if step is not None else "")
    logger.info("resumed from %s at %s: restored %s", path, at, ", ".join(restored))
    if missing:
        logger.warning("resuming from %s: not restored: %s", path, "; ".join(missing))


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
