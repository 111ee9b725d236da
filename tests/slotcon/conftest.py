"""Fixtures of the ``slotcon`` command's tests: an index where ``slotcon demo --checkpoint`` finds one."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def demo_index(synthetic_root: Path, tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real concept index of the synthetic val split by ``tiny_checkpoint``, named as ``slotcon demo`` names the
    index of a ``--checkpoint``: ``<indexes-dir>/<the checkpoint's stem>`` (its parent is the indexes folder)."""
    from indexer.build import build_index

    out = tmp_path_factory.mktemp("indexes") / tiny_checkpoint.stem
    return Path(build_index(tiny_checkpoint, synthetic_root, out, split="val2017", batch_size=12))
