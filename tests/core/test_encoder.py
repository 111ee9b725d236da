"""ResNet trunk: torchvision names and shapes, output stride, release init, options."""

from __future__ import annotations

import math

import pytest
import torch
import torchvision

from core.encoder import ResNetTrunk, infer_arch


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_names_and_shapes_match_torchvision(arch: str) -> None:
    ours = ResNetTrunk(arch).state_dict()
    ref = {k: v for k, v in getattr(torchvision.models, arch)().state_dict().items() if not k.startswith("fc.")}
    assert ours.keys() == ref.keys()
    assert all(ours[k].shape == ref[k].shape for k in ref)


def test_output_stride_and_channels() -> None:
    x = torch.randn(2, 3, 224, 224)
    assert ResNetTrunk("resnet18").eval()(x).shape == (2, 512, 7, 7)
    half16 = ResNetTrunk("resnet18", width=0.5, stride16=True).eval()
    assert half16(x).shape == (2, 256, 14, 14) and half16.num_channels == 256


def test_release_init() -> None:
    torch.manual_seed(0)
    net = ResNetTrunk("resnet50")
    w = net.layer3[0].conv2.weight
    n = w.shape[2] * w.shape[3] * w.shape[0]
    assert abs(w.std().item() - math.sqrt(2.0 / n)) < 0.1 * math.sqrt(2.0 / n)
    for block in net.modules():
        if isinstance(block, torchvision.models.resnet.Bottleneck):
            assert torch.all(block.bn3.weight == 0) and torch.all(block.bn1.weight == 1)
    assert torch.all(net.bn1.bias == 0)


def test_infer_arch_roundtrip() -> None:
    assert infer_arch(ResNetTrunk("resnet34", width=0.5).state_dict()) == ("resnet34", 0.5)
    with pytest.raises(KeyError, match="conv1"):
        infer_arch({"foo": torch.zeros(1)})


def test_unknown_arch_lists_choices() -> None:
    with pytest.raises(ValueError, match="resnet18"):
        ResNetTrunk("vgg16")
