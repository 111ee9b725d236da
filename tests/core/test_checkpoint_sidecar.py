"""Checkpoint sidecars: listings and auto-resume read ``NAME.pth.json``, never the weights, while the
sidecar describes the file; a replaced or copied checkpoint falls back to reading the file itself."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from core.checkpoint import CheckpointError, atomic_save, checkpoint_summary, save_checkpoint, sidecar_path
from trainer.checkpointing import find_auto_resume


def _corrupt_keeping_stat(path: Path) -> None:
    """Overwrite the checkpoint's bytes with garbage of the same size and restore its mtime: only a
    reader that trusts the sidecar can still answer."""
    st = path.stat()
    path.write_bytes(b"\0" * st.st_size)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_the_sidecar_answers_without_loading_the_checkpoint(tmp_path: Path, make_tiny_model) -> None:
    model = make_tiny_model(seed=0)
    path = save_checkpoint(
        tmp_path / "ckpt_epoch_3.pth",
        model,
        epoch=3,
        step=30,
        train_config={"lr": 0.5, "output_dir": str(tmp_path)},
        optimizer={"state": {}},
    )
    side = json.loads(sidecar_path(path).read_text())
    assert sidecar_path(path).name == "ckpt_epoch_3.pth.json"
    assert side["epoch"] == 3 and side["step"] == 30 and side["config"] == model.config.to_dict()
    assert "model" not in side and "optimizer" not in side and side["checkpoint_size"] == path.stat().st_size
    _corrupt_keeping_stat(path)
    summary = checkpoint_summary(path)
    assert summary["step"] == 30 and summary["train_config"]["lr"] == 0.5 and summary["metrics"] is None
    os.utime(path, ns=(0, 10**9))  # now the sidecar no longer describes the file: the file is read
    with pytest.raises(CheckpointError, match="not a loadable"):
        checkpoint_summary(path)


def test_a_copied_or_foreign_checkpoint_is_read_in_full(tmp_path: Path, make_tiny_model) -> None:
    a = save_checkpoint(tmp_path / "a.pth", make_tiny_model(seed=0), epoch=1, step=10)
    b = save_checkpoint(tmp_path / "b.pth", make_tiny_model(seed=1), epoch=2, step=20)
    shutil.copyfile(b, a)  # a's sidecar is now stale (a different mtime)
    assert checkpoint_summary(a)["step"] == 20
    plain = atomic_save({"model": {"w": torch.zeros(1)}, "epoch": 5}, tmp_path / "plain.pth")  # no sidecar
    assert not sidecar_path(plain).exists() and checkpoint_summary(plain)["epoch"] == 5
    sidecar_path(plain).write_text("[1, 2]")  # not an object: ignored
    assert checkpoint_summary(plain)["epoch"] == 5
    with pytest.raises(CheckpointError, match="not found"):
        checkpoint_summary(tmp_path / "missing.pth")


def test_auto_resume_picks_the_latest_step_from_sidecars(tmp_path: Path, make_tiny_model) -> None:
    model = make_tiny_model(seed=0)
    save_checkpoint(tmp_path / "ckpt_epoch_1.pth", model, epoch=1, step=10)
    newest = save_checkpoint(tmp_path / "current.pth", model, epoch=2, step=25)
    save_checkpoint(tmp_path / "ckpt_epoch_2.pth", model, epoch=2, step=20)
    for p in tmp_path.glob("*.pth"):
        _corrupt_keeping_stat(p)  # answered from the sidecars alone
    assert find_auto_resume(tmp_path) == newest
    (tmp_path / "current.pth.json").unlink()  # without its sidecar the garbage file is read, and skipped
    assert find_auto_resume(tmp_path) == tmp_path / "ckpt_epoch_2.pth"
