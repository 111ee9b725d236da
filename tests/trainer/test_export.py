"""``slotcon export``: each format loads into its target layout's key set."""

from __future__ import annotations

import argparse
import pickle
from pathlib import Path

import pytest
import torch
import torchvision

from core.checkpoint import load_model, read_checkpoint, save_checkpoint
from trainer.export import detectron2_name, main


@pytest.fixture(scope="module")
def r18_checkpoint(tmp_path_factory: pytest.TempPathFactory, make_tiny_model) -> Path:
    """A full-width ResNet-18 SlotCon checkpoint (small heads) whose teacher differs from the student."""
    model = make_tiny_model(seed=1, width=1.0, stride16=False)
    with torch.no_grad():
        for p in model.encoder_k.parameters():
            p.add_(0.01)
    path = tmp_path_factory.mktemp("export") / "r18.pth"
    save_checkpoint(path, model, epoch=3, step=30)
    return path


def test_torchvision_export_loads_into_resnet18(r18_checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "tv.pth"
    assert main(["--checkpoint", str(r18_checkpoint), "--format", "torchvision", "--out", str(out)]) == 0
    state = torch.load(out, weights_only=True)
    net = torchvision.models.resnet18()
    missing, unexpected = net.load_state_dict(state, strict=False)
    assert sorted(missing) == ["fc.bias", "fc.weight"] and unexpected == []
    teacher = load_model(r18_checkpoint).encoder_k.state_dict()
    torch.testing.assert_close(net.conv1.weight, teacher["conv1.weight"])


def test_release_export_roundtrips(r18_checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "release.pth"
    assert main(["--checkpoint", str(r18_checkpoint), "--format", "release", "--out", str(out)]) == 0
    ckpt = read_checkpoint(out)
    assert isinstance(ckpt["args"], argparse.Namespace) and ckpt["epoch"] == 3
    assert all(k.startswith("module.") for k in ckpt["model"])
    assert "module.encoder_k.conv1.weight" in ckpt["model"] and "module.grouping_k.slot_embed.weight" in ckpt["model"]
    a, b = load_model(out).state_dict(), load_model(r18_checkpoint).state_dict()
    for k in a:
        torch.testing.assert_close(a[k], b[k], msg=k)
    # the release export is itself accepted as input
    assert main(["--checkpoint", str(out), "--format", "mmseg", "--out", str(tmp_path / "m.pth")]) == 0


def test_detectron2_export_names_and_arrays(r18_checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "d2.pkl"
    assert main(["--checkpoint", str(r18_checkpoint), "--format", "detectron2", "--out", str(out)]) == 0
    with open(out, "rb") as f:
        obj = pickle.load(f)
    assert obj["matching_heuristics"] is True
    weights = obj["model"]
    expected = {
        "stem.conv1.weight",
        "stem.conv1.norm.weight",
        "stem.conv1.norm.running_mean",
        "res2.0.conv1.weight",
        "res2.0.conv1.norm.bias",
        "res2.0.conv2.norm.weight",
        "res3.0.shortcut.weight",
        "res3.0.shortcut.norm.running_var",
        "res5.1.conv2.norm.weight",
    }
    assert expected <= set(weights)
    assert not any(k.startswith(("layer", "conv1", "bn1", "fc")) or "downsample" in k for k in weights)
    assert all(type(v).__module__ == "numpy" for v in weights.values())
    assert detectron2_name("bn1.weight") == "stem.conv1.norm.weight"
    assert detectron2_name("layer4.1.downsample.1.bias") == "res5.1.shortcut.norm.bias"


def test_mmseg_export_keys(r18_checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "mm.pth"
    assert main(["--checkpoint", str(r18_checkpoint), "--format", "mmseg", "--out", str(out)]) == 0
    state = torch.load(out, weights_only=True)["state_dict"]
    tv_keys = {k for k in torchvision.models.resnet18().state_dict() if "num_batches_tracked" not in k}
    assert set(state) == tv_keys - {"fc.weight", "fc.bias"}


def test_export_of_missing_checkpoint_is_an_error(tmp_path: Path, capsys) -> None:
    assert main(["--checkpoint", str(tmp_path / "none.pth"), "--format", "mmseg", "--out", str(tmp_path / "x")]) == 2
    assert "not found" in capsys.readouterr().err
