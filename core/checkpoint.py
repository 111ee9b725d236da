"""Checkpoints: this project's own format and the public release's full checkpoints (docs/method.md §8).

Own format (``format: slotcon-explorer``): ``model`` (state dict, no ``module.`` prefix), ``config``
(:class:`~core.model.SlotConConfig` as a dict), plus whatever the trainer adds (``optimizer``,
``scheduler``, ``scaler``, ``epoch``, ``step``, ``rng``, ``train_config``). Release format: ``model`` is a
DDP state dict (``module.`` prefix) and ``args`` a pickled ``argparse.Namespace``; we load it with
``weights_only=True``, allowing ``argparse.Namespace`` alone, and read the dims from tensor shapes.

Beside each checkpoint it writes, :func:`save_checkpoint` puts a small JSON *sidecar* (``NAME.pth.json``:
epoch, step, model and training config, metrics, and the size and mtime of the file it describes).
Listings and auto-resume read :func:`checkpoint_summary`, which answers from the sidecar while it
matches the file and loads the checkpoint itself only when it does not (older or copied files, the
release's): a full ``torch.load`` (hundreds of MB at R50) happens only when a checkpoint is used.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from core.encoder import infer_arch
from core.model import SlotCon, SlotConConfig

FORMAT = "slotcon-explorer"
_GROUPING_KEYS = ("grouping_k.slot_embed.weight", "projector_k.mlp.0.weight", "encoder_k.conv1.weight")


class CheckpointError(ValueError):
    """A checkpoint that cannot be used as asked; the message names what is missing."""


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temp file in the same directory, fsync, then rename over ``path``.

    A reader never sees a half-written file, even if the process dies mid-write. Returns the path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def save_checkpoint(path: str | os.PathLike, model: SlotCon, **extra: Any) -> Path:
    """Write ``model`` (own format, config inside) plus ``extra`` entries atomically. Returns the path."""
    model = getattr(model, "module", model)
    state = {"format": FORMAT, "version": 1, "config": model.config.to_dict(), "model": model.state_dict()}
    state.update(extra)
    path = atomic_save(state, path)
    _write_sidecar(path, {k: state[k] for k in _SUMMARY_KEYS if k in state})
    return path


#: What a sidecar records of a checkpoint (the small entries; never tensors).
_SUMMARY_KEYS = ("format", "version", "config", "epoch", "step", "train_config", "metrics")


def sidecar_path(path: str | os.PathLike) -> Path:
    """``NAME.pth`` → ``NAME.pth.json``."""
    path = Path(path)
    return path.with_name(path.name + ".json")


def _write_sidecar(path: Path, summary: dict[str, Any]) -> None:
    st = path.stat()
    body = {**summary, "checkpoint_size": st.st_size, "checkpoint_mtime_ns": st.st_mtime_ns}
    side = sidecar_path(path)
    tmp = side.with_name(f".{side.name}.tmp")
    tmp.write_text(json.dumps(body, indent=1, default=str))
    os.replace(tmp, side)


def checkpoint_summary(path: str | os.PathLike) -> dict[str, Any]:
    """``{"epoch", "step", "config", "train_config", "metrics"}`` of a checkpoint (missing entries are
    None): from its sidecar when the sidecar describes this very file (same size and mtime), else from
    the checkpoint itself. Raises :class:`CheckpointError` as :func:`read_checkpoint` does."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    st = path.stat()
    try:
        body = json.loads(sidecar_path(path).read_text())
        if body.get("checkpoint_size") == st.st_size and body.get("checkpoint_mtime_ns") == st.st_mtime_ns:
            return {k: body.get(k) for k in _SUMMARY_KEYS}
    except (OSError, ValueError, AttributeError):
        pass  # no sidecar, unreadable, or not an object: read the file
    ckpt = read_checkpoint(path)
    return {k: ckpt.get(k) for k in _SUMMARY_KEYS}


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint dict safely (``weights_only=True``; ``argparse.Namespace`` allowed).

    Raises :class:`CheckpointError` for a missing file or a file that is not a checkpoint dict.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - unpickling errors come in many types
        raise CheckpointError(f"{path} is not a loadable PyTorch checkpoint: {e}") from e
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path} holds a {type(ckpt).__name__}, not a checkpoint dict")
    return ckpt


def is_release_checkpoint(ckpt: dict[str, Any]) -> bool:
    """True for the public release's full-checkpoint layout (``module.``-prefixed model keys)."""
    model = ckpt.get("model")
    return isinstance(model, dict) and any(k.startswith("module.") for k in model)


def _strip_module(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k.removeprefix("module."): v for k, v in state.items()}


def release_config(state: dict[str, torch.Tensor], args: Any = None) -> SlotConConfig:
    """Model config of a release state dict (prefix stripped): dims from shapes, temps from ``args``."""
    missing = [k for k in _GROUPING_KEYS if k not in state]
    if missing:
        enc_only = any(k.startswith(("encoder_q.", "encoder_k.", "conv1.")) for k in state)
        kind = "a backbone-only checkpoint" if enc_only else "not a SlotCon checkpoint"
        raise CheckpointError(f"cannot group: {kind}; missing {', '.join(missing)}")
    arch, width = infer_arch(state, "encoder_k.")
    ns = vars(args) if isinstance(args, argparse.Namespace) else dict(args or {})
    proj0 = state["projector_k.mlp.0.weight"]
    cfg = SlotConConfig(
        arch=arch,
        width=width,
        dim_hidden=proj0.shape[0],
        dim_out=state["grouping_k.slot_embed.weight"].shape[1],
        num_prototypes=state["grouping_k.slot_embed.weight"].shape[0],
    )
    for name in ("teacher_temp", "student_temp", "center_momentum", "group_loss_weight"):
        if name in ns:
            setattr(cfg, name, float(ns[name]))
    cfg.stride16 = bool(ns.get("stride16", False))  # our option; absent (stride 32) in the release
    return cfg


def model_from_checkpoint(ckpt: dict[str, Any], *, strict: bool = True) -> SlotCon:
    """Build a :class:`SlotCon` from a loaded checkpoint dict of either format.

    A release checkpoint without the student (``_q``) weights still loads for inference: the student
    is initialised from the teacher. Raises :class:`CheckpointError` naming what is missing.
    """
    if "model" not in ckpt or not isinstance(ckpt["model"], dict):
        keys = sorted(ckpt)[:8]
        raise CheckpointError(f"no 'model' state dict in checkpoint (top-level keys: {keys})")
    if ckpt.get("format") == FORMAT:
        state = ckpt["model"]
        cfg = SlotConConfig.from_dict(ckpt["config"])
        for k in _GROUPING_KEYS:
            if k not in state:
                raise CheckpointError(f"cannot group: missing {k}")
    else:
        state = _strip_module(ckpt["model"])
        cfg = release_config(state, ckpt.get("args"))
        for k in list(state):
            if "_k." in k and k.replace("_k.", "_q.", 1) not in state:
                state[k.replace("_k.", "_q.", 1)] = state[k]
    model = SlotCon(cfg)
    own = model.state_dict()
    if "predictor_slot.mlp.0.weight" not in state:
        state.update({k: v for k, v in own.items() if k.startswith("predictor_slot.")})
    state.setdefault("center", own["center"])
    missing, unexpected = model.load_state_dict(state, strict=False)
    if strict and (missing or unexpected):
        raise CheckpointError(f"state dict mismatch: missing {missing[:6]}, unexpected {unexpected[:6]}")
    return model


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> SlotCon:
    """Load a SlotCon model from our checkpoint or a release full checkpoint, in eval mode on ``device``.

    The model is ready for ``forward`` (training loss) and :func:`core.inference.prototype_scores`
    (teacher weights). Raises :class:`CheckpointError` for missing files, backbone-only or foreign
    checkpoints, naming what is missing.
    """
    model = model_from_checkpoint(read_checkpoint(path))
    return model.to(device).eval()


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes (identifies the checkpoint an index was built from)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def to_release_state(model: SlotCon) -> dict[str, Any]:
    """The release's full-checkpoint dict for ``model`` (``module.`` keys, ``args`` Namespace)."""
    model = getattr(model, "module", model)
    cfg = model.config
    args = argparse.Namespace(
        arch=cfg.arch, dim_hidden=cfg.dim_hidden, dim_out=cfg.dim_out, num_prototypes=cfg.num_prototypes,
        teacher_temp=cfg.teacher_temp, student_temp=cfg.student_temp,
        center_momentum=cfg.center_momentum, group_loss_weight=cfg.group_loss_weight,
        width=cfg.width, stride16=cfg.stride16,
    )  # fmt: skip
    return {"model": {f"module.{k}": v for k, v in model.state_dict().items()}, "args": args}
