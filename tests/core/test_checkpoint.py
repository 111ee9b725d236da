"""Own checkpoints round-trip; release-format checkpoints load; bad checkpoints get clear errors."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from core.checkpoint import (
    CheckpointError,
    atomic_save,
    file_sha256,
    load_model,
    save_checkpoint,
    to_release_state,
)
from core.inference import prototype_scores


def _perturbed(make_tiny_model):
    model = make_tiny_model(seed=2)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
        model.center.normal_()
    # give the teacher BN running stats that differ from the defaults
    model.train()
    model.teacher_project(torch.randn(4, 3, 64, 64))
    return model.eval()


def test_own_checkpoint_round_trip(tmp_path: Path, make_tiny_model) -> None:
    model = _perturbed(make_tiny_model)
    path = save_checkpoint(tmp_path / "a.pth", model, epoch=3, step=30)
    loaded = load_model(path)
    assert loaded.config == model.config and not loaded.training
    for k, v in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[k], v)
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(prototype_scores(loaded, x), prototype_scores(model, x))


def test_release_checkpoint_loads_with_same_scores(tmp_path: Path, make_tiny_model) -> None:
    """A file in the release's documented layout (module. keys, args Namespace) gives the same scores."""
    model = _perturbed(make_tiny_model)
    state = to_release_state(model)
    assert all(k.startswith("module.") for k in state["model"])
    assert "module.projector_k.mlp.6.weight" in state["model"] and "module.center" in state["model"]
    state["args"].teacher_temp = 0.07
    full = {**state, "optimizer": {}, "scheduler": {}, "epoch": 800, "scaler": {}}
    path = tmp_path / "release.pth"
    torch.save(full, path)
    loaded = load_model(path)
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(prototype_scores(loaded, x), prototype_scores(model, x))
    assert loaded.config.num_prototypes == 8 and loaded.config.dim_out == 32


def test_release_teacher_only_checkpoint_can_still_group(tmp_path: Path, make_tiny_model) -> None:
    model = _perturbed(make_tiny_model)
    state = to_release_state(model)
    state["model"] = {k: v for k, v in state["model"].items() if "_q." not in k and "predictor" not in k}
    torch.save(state, tmp_path / "k_only.pth")
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(prototype_scores(load_model(tmp_path / "k_only.pth"), x), prototype_scores(model, x))


def test_backbone_only_checkpoint_is_refused_by_name(tmp_path: Path, make_tiny_model) -> None:
    model = make_tiny_model()
    enc = {f"module.encoder_k.{k}": v for k, v in model.encoder_k.state_dict().items()}
    torch.save({"model": enc}, tmp_path / "backbone.pth")
    with pytest.raises(CheckpointError, match="backbone-only.*grouping_k.slot_embed.weight"):
        load_model(tmp_path / "backbone.pth")


def test_foreign_and_missing_files(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        load_model(tmp_path / "nope.pth")
    torch.save({"state_dict": {"x": torch.zeros(1)}}, tmp_path / "foreign.pth")
    with pytest.raises(CheckpointError, match="no 'model'"):
        load_model(tmp_path / "foreign.pth")
    (tmp_path / "garbage.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a loadable"):
        load_model(tmp_path / "garbage.pth")


def test_arbitrary_pickles_are_not_executed(tmp_path: Path) -> None:
    class Evil:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    torch.save({"model": {}, "args": Evil()}, tmp_path / "evil.pth", _use_new_zipfile_serialization=True)
    with pytest.raises(CheckpointError):
        load_model(tmp_path / "evil.pth")
    assert not (tmp_path / "pwned").exists()


def test_namespace_args_are_allowed(tmp_path: Path, make_tiny_model) -> None:
    state = to_release_state(make_tiny_model())
    assert isinstance(state["args"], argparse.Namespace)
    torch.save(state, tmp_path / "r.pth")
    load_model(tmp_path / "r.pth")


def test_atomic_save_leaves_no_partial_file_when_killed(tmp_path: Path) -> None:
    target = tmp_path / "big.pth"
    atomic_save({"v": 1}, target)
    script = textwrap.dedent(f"""
        import sys, torch
        sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})
        from core.checkpoint import atomic_save
        print("ready", flush=True)
        atomic_save({{"big": torch.zeros(60_000_000)}}, {str(target)!r})
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    # kill while the 240 MB tensor is being written
    deadline = 200
    while deadline and not any(p.name.endswith(".tmp") for p in tmp_path.iterdir()):
        deadline -= 1
        subprocess.run(["sleep", "0.01"])
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert torch.load(target, weights_only=True) == {"v": 1}  # old content intact, never half-written


def test_file_sha256_changes_with_content(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(b"x")
    b.write_bytes(b"y")
    assert file_sha256(a) != file_sha256(b) and len(file_sha256(a)) == 64
