"""ResNet encoders with torchvision parameter names, returning the last feature map.

The public SlotCon release uses ResNet-18/34/50 cut after ``layer4`` (no pooling, no ``fc``), with
the MoCo-style init: conv weights ~ N(0, sqrt(2/n)), n = k*k*out_channels; BN weight 1, bias 0; and
the last BN of every residual block starting at 0. Two options for small images and CPUs, which the
release does not have: a width multiplier (``width=0.5`` halves every stage) and a stride-16 last
stage (``stride16=True`` gives a 14x14 map for a 224 input, 7x7 for 112).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck


@dataclass(frozen=True)
class ArchSpec:
    """Block type and per-stage block counts of one ResNet depth."""

    block: type[nn.Module]
    layers: tuple[int, int, int, int]


ARCHS: dict[str, ArchSpec] = {
    "resnet18": ArchSpec(BasicBlock, (2, 2, 2, 2)),
    "resnet34": ArchSpec(BasicBlock, (3, 4, 6, 3)),
    "resnet50": ArchSpec(Bottleneck, (3, 4, 6, 3)),
    "resnet101": ArchSpec(Bottleneck, (3, 4, 23, 3)),
}


class ResNetTrunk(nn.Module):
    """ResNet stem + layer1..layer4; ``forward`` returns the (B, C, H/32, W/32) map (H/16 with stride16).

    Parameter names equal torchvision's ResNet (``conv1``, ``bn1``, ``layer1.0.conv1``,
    ``layer1.0.downsample.0``, ...) so release and torchvision weights load by name.
    """

    def __init__(
        self,
        arch: str = "resnet50",
        width: float = 1.0,
        stride16: bool = False,
        norm_layer: Callable[[int], nn.Module] | None = None,
    ) -> None:
        super().__init__()
        if arch not in ARCHS:
            raise ValueError(f"unknown arch {arch!r}; choose one of {sorted(ARCHS)}")
        if width <= 0:
            raise ValueError(f"width multiplier must be > 0, got {width}")
        spec = ARCHS[arch]
        self.arch, self.width, self.stride16 = arch, width, stride16
        self._norm = norm_layer or nn.BatchNorm2d
        base = max(8, int(round(64 * width)))
        self.inplanes = base
        self.conv1 = nn.Conv2d(3, base, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = self._norm(base)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(spec.block, base, spec.layers[0], stride=1)
        self.layer2 = self._make_layer(spec.block, base * 2, spec.layers[1], stride=2)
        self.layer3 = self._make_layer(spec.block, base * 4, spec.layers[2], stride=2)
        self.layer4 = self._make_layer(spec.block, base * 8, spec.layers[3], stride=1 if stride16 else 2)
        self.num_channels = base * 8 * spec.block.expansion
        self.reset_parameters()

    def _make_layer(self, block: type[nn.Module], planes: int, blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        out = planes * block.expansion
        if stride != 1 or self.inplanes != out:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, out, kernel_size=1, stride=stride, bias=False), self._norm(out)
            )
        layers = [block(self.inplanes, planes, stride, downsample, norm_layer=self._norm)]
        self.inplanes = out
        layers += [block(self.inplanes, planes, norm_layer=self._norm) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Release init: He-normal convs (fan-out), unit BN, zero-init last BN of each block."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                m.weight.normal_(0, math.sqrt(2.0 / n))
            elif isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.weight.fill_(1)
                m.bias.zero_()
        for m in self.modules():
            if isinstance(m, Bottleneck):
                m.bn3.weight.zero_()
            elif isinstance(m, BasicBlock):
                m.bn2.weight.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) images → (B, C, H/32, W/32) features (C = ``self.num_channels``)."""
        return self.late(self.early(x))

    def early(self, x: torch.Tensor) -> torch.Tensor:
        """Stem, ``layer1`` and ``layer2``: the stages with large activations and small weights."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer2(self.layer1(x))

    def late(self, x: torch.Tensor) -> torch.Tensor:
        """``layer3`` and ``layer4`` on :meth:`early`'s output: small activations, most of the weights."""
        return self.layer4(self.layer3(x))

    def early_bytes(self, height: int, width: int, element_size: int = 4) -> int:
        """Bytes of the largest activation :meth:`early` makes for one ``height``×``width`` image."""
        sizes = []
        for stride, stage in ((2, self.conv1), (4, self.layer1), (8, self.layer2)):
            channels = max(m.out_channels for m in stage.modules() if isinstance(m, nn.Conv2d))
            sizes.append(channels * math.ceil(height / stride) * math.ceil(width / stride))
        return max(sizes) * element_size


def infer_arch(state: dict[str, torch.Tensor], prefix: str = "") -> tuple[str, float]:
    """Guess (arch, width) from an encoder state dict's key names and shapes.

    Raises ``KeyError`` naming what is missing when the keys are not a ResNet trunk's.
    """
    conv1 = prefix + "conv1.weight"
    if conv1 not in state:
        raise KeyError(f"missing encoder weight {conv1!r}")
    width = state[conv1].shape[0] / 64.0
    bottleneck = (prefix + "layer1.0.conv3.weight") in state
    counts = []
    for layer in range(1, 5):
        n = 0
        while f"{prefix}layer{layer}.{n}.conv1.weight" in state:
            n += 1
        counts.append(n)
    for name, spec in ARCHS.items():
        if tuple(counts) == spec.layers and (spec.block is Bottleneck) == bottleneck:
            return name, width
    raise KeyError(f"encoder with blocks per stage {counts} matches no known ResNet {sorted(ARCHS)}")
