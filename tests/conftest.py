"""Fixtures shared by every package's tests: a small synthetic dataset and tiny checkpoints; the markers.

Package-specific fixtures live in ``tests/<package>/conftest.py``.

Markers (declared in pyproject.toml):

- ``gpu``: needs a CUDA device; skipped with the reason "needs a CUDA GPU" where torch sees none
  (:func:`pytest_collection_modifyitems`).
- ``slow``: took more than 20 s on a 2-core CPU. Slow tests still run by default (CI runs them);
  ``pytest -m "not slow"`` leaves them out for a quick local pass.
- ``browser``: drives a real Chromium (skipped where Debian's chromium is not installed).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from core.checkpoint import save_checkpoint
from core.model import SlotCon, SlotConConfig

torch.set_num_threads(min(2, os.cpu_count() or 1))

# A model small enough that a forward pass takes milliseconds on one CPU core.
TINY_CONFIG = dict(
    arch="resnet18", width=0.25, stride16=True, dim_hidden=64, dim_out=32, num_prototypes=8
)


def tiny_model(seed: int = 0, **overrides) -> SlotCon:
    """A deterministic tiny SlotCon (ResNet-18 at quarter width, stride 16, K=8)."""
    torch.manual_seed(seed)
    return SlotCon(SlotConConfig(**{**TINY_CONFIG, **overrides}))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip the ``gpu`` tests, with a stated reason, where there is no CUDA device."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_config() -> SlotConConfig:
    """The tiny model config used across the suite."""
    return SlotConConfig(**TINY_CONFIG)


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real synthetic-scenes dataset (COCO layout): 24 train + 12 val images at 96 px."""
    from core.synthetic import generate

    root = tmp_path_factory.mktemp("synthetic")
    generate(root, num_train=24, num_val=12, size=96, seed=0)
    return root


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An own-format checkpoint of an untrained tiny model (teacher = student at init)."""
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pth"
    save_checkpoint(path, tiny_model(0), epoch=0, step=0)
    return path


@pytest.fixture(scope="session")
def make_tiny_model():
    """The :func:`tiny_model` factory, for tests that need fresh models (``make_tiny_model(seed=1)``)."""
    return tiny_model
