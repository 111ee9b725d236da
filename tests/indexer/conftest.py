"""Indexer fixtures: a tiny index built from ``tiny_checkpoint`` on the synthetic val split."""

from __future__ import annotations

from pathlib import Path

import pytest

from indexer.build import build_index


@pytest.fixture(scope="session")
def tiny_index(tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint: Path, synthetic_root: Path) -> Path:
    """Directory of an index of the 12 synthetic val images (K=8, stride 16 → 14×14 feature maps)."""
    out = tmp_path_factory.mktemp("index") / "tiny"
    return build_index(tiny_checkpoint, synthetic_root, out, split="val2017", batch_size=4)
