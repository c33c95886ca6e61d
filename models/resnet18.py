"""ResNet-18 (He et al. 2016) written out by hand, with random weights: for speed benchmarks only.

The architecture matches torchvision's ``resnet18`` (which is not installed here); there are no trained
weights, so its outputs mean nothing and it must not be used to measure accuracy. Weights and
BatchNorm statistics are drawn from a fixed seed (BatchNorm statistics are not the trivial 0/1, so BN
folding changes numbers and is actually exercised). Input ``(1, 3, 224, 224)`` float32; 1000 logits.
"""

from __future__ import annotations

import torch
from torch import nn

INPUT_NAMES = ("input",)
DESCRIPTION = "ResNet-18, RANDOM weights (speed only, not accuracy), 1x3x224x224 float32, 1000 logits"
SEED = 0


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers plus a shortcut (1x1 conv-BN when the shape changes), then ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.downsample = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                                            nn.BatchNorm2d(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Residual block: ``relu(bn2(conv2(relu(bn1(conv1(x))))) + downsample(x))``."""
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.downsample(x))


class ResNet18(nn.Module):
    """Stem (7x7/2 conv, BN, ReLU, 3x3/2 maxpool), four stages of two blocks, global average pool, fc."""

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        widths, strides = (64, 128, 256, 512), (1, 2, 2, 2)
        ins = (64,) + widths[:-1]
        self.layers = nn.Sequential(*(
            nn.Sequential(BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1))
            for cin, cout, stride in zip(ins, widths, strides)))
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``[N, num_classes]`` logits of an ``[N, 3, H, W]`` image batch."""
        x = self.maxpool(torch.relu(self.bn1(self.conv1(x))))
        x = self.layers(x)
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def _randomize(model: nn.Module, generator: torch.Generator) -> None:
    """Kaiming-normal convolutions; BatchNorm scale/shift/statistics drawn near 1/0 (not exactly 1/0)."""
    with torch.no_grad():
        for layer in model.modules():
            if isinstance(layer, nn.Conv2d):
                std = (2.0 / (layer.out_channels * layer.kernel_size[0] * layer.kernel_size[1])) ** 0.5
                layer.weight.copy_(torch.randn(layer.weight.shape, generator=generator) * std)
            elif isinstance(layer, nn.BatchNorm2d):
                n = layer.num_features
                layer.weight.copy_(0.5 + torch.rand(n, generator=generator))
                layer.bias.copy_(0.1 * torch.randn(n, generator=generator))
                layer.running_mean.copy_(0.1 * torch.randn(n, generator=generator))
                layer.running_var.copy_(0.5 + torch.rand(n, generator=generator))
            elif isinstance(layer, nn.Linear):
                layer.weight.copy_(torch.randn(layer.weight.shape, generator=generator) * layer.in_features ** -0.5)
                layer.bias.zero_()


def load(seed: int = SEED) -> tuple[ResNet18, tuple[torch.Tensor]]:
    """Return ``(model, (input,))``: ResNet-18 with weights from ``seed`` and a seeded N(0, 1) input."""
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):  # default init draws from the global RNG; leave it untouched
        model = ResNet18()
    _randomize(model, generator)
    return model.eval(), (torch.randn(1, 3, 224, 224, generator=generator),)
