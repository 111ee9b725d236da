"""``slotcon export``: a checkpoint (ours or the release's) → a file a downstream toolkit loads.

Formats (all take the **teacher** encoder ``encoder_k``, as the release's transfer scripts do):

- ``release``: the public release's full-checkpoint layout (``model`` with ``module.`` keys, ``args``
  Namespace, ``epoch``), so its ``transfer/*/convert_pretrain_to_*.py`` and ``viz_slots.py`` accept it.
- ``torchvision``: a state dict that ``torchvision.models.resnetXX()`` loads with only ``fc.*`` missing
  (needs ``width`` 1.0; ``stride16`` changes strides, not weights).
- ``detectron2``: a pickle ``{"model": {name: ndarray}, "__author__", "matching_heuristics": True}``
  with Detectron2 names (``stem.conv1``, ``res2.0.conv1.norm``, ``res2.0.shortcut``, ...).
- ``mmseg``: ``torch.save({"state_dict": encoder keys})`` (mmseg adds ``backbone.`` itself).
"""

from __future__ import annotations

import argparse
import logging
import pickle
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from core.checkpoint import CheckpointError, atomic_save, model_from_checkpoint, read_checkpoint, to_release_state
from core.model import SlotCon

logger = logging.getLogger(__name__)
FORMATS = ("release", "torchvision", "detectron2", "mmseg")


def teacher_encoder_state(model: SlotCon) -> dict[str, torch.Tensor]:
    """Returns the teacher encoder's state dict with torchvision names (``conv1.weight``, ``layer1.0...``)."""
    return {k: v.detach().clone() for k, v in model.encoder_k.state_dict().items()}


def detectron2_name(key: str) -> str:
    """Returns the Detectron2 name of a torchvision ResNet key (the MoCo/SlotCon conversion rules)."""
    if "layer" not in key:
        key = "stem." + key
    for t in (1, 2, 3, 4):
        key = key.replace(f"layer{t}", f"res{t + 1}")
    for t in (1, 2, 3):
        key = key.replace(f"bn{t}", f"conv{t}.norm")
    return key.replace("downsample.0", "shortcut").replace("downsample.1", "shortcut.norm")


def export_object(ckpt: dict[str, Any], fmt: str) -> Any:
    """Returns the object to write for ``fmt`` from a loaded checkpoint dict (ours or the release's)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    model = model_from_checkpoint(ckpt, strict=False)
    if fmt == "release":
        state = to_release_state(model)
        state["epoch"] = int(ckpt.get("epoch", 0))
        return state
    enc = teacher_encoder_state(model)
    if fmt == "torchvision":
        if model.config.width != 1.0:
            logger.warning("width %.2f: torchvision's ResNet has width 1.0; shapes will not match", model.config.width)
        return enc
    if fmt == "mmseg":
        return {"state_dict": {k: v for k, v in enc.items() if "num_batches_tracked" not in k}}
    weights = {detectron2_name(k): v.numpy() for k, v in enc.items() if "num_batches_tracked" not in k}
    return {"model": weights, "__author__": "slotcon-explorer", "matching_heuristics": True}


def export_checkpoint(checkpoint: str | Path, fmt: str, out: str | Path) -> Path:
    """Convert ``checkpoint`` to ``fmt`` and write ``out`` atomically; returns the written path."""
    obj = export_object(read_checkpoint(checkpoint), fmt)
    out = Path(out)
    if fmt == "detectron2":
        tmp = out.with_name(f".{out.name}.tmp")
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            pickle.dump(obj, f)
        tmp.replace(out)
        return out
    return atomic_save(obj, out)


def get_args_parser() -> argparse.ArgumentParser:
    """Returns the parser of ``slotcon export``."""
    p = argparse.ArgumentParser(
        prog="slotcon export", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--checkpoint", type=Path, required=True, help="our checkpoint or a release full checkpoint")
    p.add_argument("--format", choices=FORMATS, required=True, help="target layout")
    p.add_argument("--out", type=Path, required=True, help="output file")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns 0, or 2 with a message for an unusable checkpoint."""
    args = get_args_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        path = export_checkpoint(args.checkpoint, args.format, args.out)
    except CheckpointError as e:
        print(f"slotcon export: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.format} export to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
