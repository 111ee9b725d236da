"""Indexes in the order of their checkpoints' training, as Compare's selectors list them (earlier as A)."""

from __future__ import annotations


def training_order(entry: dict) -> tuple:
    """How far the index's checkpoint trained (step, then epoch; unknown ones first), then its name."""
    step, epoch = entry.get("step"), entry.get("epoch")
    return (step is not None, step or 0, epoch is not None, epoch or 0, entry["name"])


def labels(indexes: list[dict]) -> dict[str, str]:
    """Each index's name with its checkpoint's step or epoch, as the selectors show it."""
    out = {}
    for i in indexes:
        at = (
            f"step {i['step']}"
            if i.get("step") is not None
            else (f"epoch {i['epoch']}" if i.get("epoch") is not None else "step unknown")
        )
        out[i["name"]] = f"{i['name']} ({at})"
    return out
