"""MobileNetV3-Small (Howard et al. 2019) written out by hand, with random weights: not for accuracy.

The architecture matches torchvision's ``mobilenet_v3_small`` (which is not installed here) layer for
layer, 2,542,856 parameters, ~57M MACs at 224x224: a 16-channel 3x3/2 stem conv + BN + hardswish; the
11 inverted-residual blocks of the paper's Table 2 (kernel 3 or 5, expansion, squeeze-excite on 9 of
them, ReLU ("RE") or hardswish ("HS"), stride); a 1x1 conv to 576 + BN + hardswish; global average
pool; ``Linear(576, 1024)``, hardswish, dropout (identity in eval), ``Linear(1024, 1000)``.
Squeeze-excite is ``x * hardsigmoid(fc2(relu(fc1(avgpool(x)))))`` with 1x1 convs that have biases; all
other convs are bias-free and followed by BatchNorm (eps 1e-3, as torchvision).

There are no trained weights, so the logits mean nothing; use it for speed and for float/quantized
*agreement*, never for accuracy. Weights come from a fixed seed (see :func:`randomize`): the BatchNorm
running statistics are the batch statistics of a few crops of two scikit-image photos that are used
for nothing else (so they are far from the trivial 0/1, BN folding is exercised, and activations keep
a sane scale through all 11 blocks on photos).

Input ``(1, 3, 224, 224)`` float32 RGB with ImageNet normalisation (``models.data.imagenet_preprocess``:
shorter side to 256, center crop 224, ``(x / 255 - mean) / std``); the example input is the chelsea photo.
Output: 1000 logits.
"""

from __future__ import annotations

import torch
from torch import nn

from .data import imagenet_preprocess as preprocess  # noqa: F401  (the input this model expects)
from .data import statistics_images

INPUT_NAMES = ("input",)
DESCRIPTION = ("MobileNetV3-Small, RANDOM weights (speed/agreement only, not accuracy), 1x3x224x224 float32 RGB, "
               "ImageNet mean/std, 1000 logits")
SEED = 0
BN_EPS = 1e-3

# (kernel, expanded channels, out channels, squeeze-excite, activation, stride); input is 16 channels.
BLOCKS: tuple[tuple[int, int, int, bool, str, int], ...] = (
    (3, 16, 16, True, "RE", 2),
    (3, 72, 24, False, "RE", 2),
    (3, 88, 24, False, "RE", 1),
    (5, 96, 40, True, "HS", 2),
    (5, 240, 40, True, "HS", 1),
    (5, 240, 40, True, "HS", 1),
    (5, 120, 48, True, "HS", 1),
    (5, 144, 48, True, "HS", 1),
    (5, 288, 96, True, "HS", 2),
    (5, 576, 96, True, "HS", 1),
    (5, 576, 96, True, "HS", 1),
)
"""The paper's Table 2 (and torchvision's ``inverted_residual_setting``) for MobileNetV3-Small."""


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round ``value`` to a multiple of ``divisor``, never more than 10% down (torchvision's rule)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def _activation(kind: str) -> nn.Module:
    return nn.ReLU() if kind == "RE" else nn.Hardswish()


def _conv_bn(in_channels: int, out_channels: int, kernel: int, stride: int = 1, groups: int = 1,
             activation: str | None = None) -> nn.Sequential:
    """Bias-free conv (padding ``kernel // 2``), BatchNorm, then the activation if one is named."""
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, out_channels, kernel, stride=stride, padding=kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out_channels, eps=BN_EPS)]
    if activation is not None:
        layers.append(_activation(activation))
    return nn.Sequential(*layers)


class SqueezeExcite(nn.Module):
    """``x * hardsigmoid(fc2(relu(fc1(avgpool(x)))))``, the 1x1 convs with biases."""

    def __init__(self, channels: int, squeeze: int):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.relu = nn.ReLU()
        self.fc2 = nn.Conv2d(squeeze, channels, 1)
        self.gate = nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Scale each channel of ``x`` by a gate in [0, 1] computed from its global average."""
        scale = nn.functional.adaptive_avg_pool2d(x, 1)
        return x * self.gate(self.fc2(self.relu(self.fc1(scale))))


class InvertedResidual(nn.Module):
    """1x1 expand (skipped when the expansion is the identity), depthwise kxk, optional SE, 1x1 project.

    The shortcut is added when the stride is 1 and the channel count is unchanged.
    """

    def __init__(self, in_channels: int, kernel: int, expanded: int, out_channels: int, use_se: bool,
                 activation: str, stride: int):
        super().__init__()
        self.use_residual = stride == 1 and in_channels == out_channels
        layers: list[nn.Module] = []
        if expanded != in_channels:
            layers.append(_conv_bn(in_channels, expanded, 1, activation=activation))
        layers.append(_conv_bn(expanded, expanded, kernel, stride=stride, groups=expanded, activation=activation))
        if use_se:
            layers.append(SqueezeExcite(expanded, make_divisible(expanded // 4)))
        layers.append(_conv_bn(expanded, out_channels, 1))
        self.block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The block, plus ``x`` when the shapes allow a residual."""
        out = self.block(x)
        return out + x if self.use_residual else out


class MobileNetV3Small(nn.Module):
    """Stem, the 11 blocks of :data:`BLOCKS`, 1x1 conv to 576, global average pool, two-layer classifier."""

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        blocks: list[nn.Module] = [_conv_bn(3, 16, 3, stride=2, activation="HS")]
        channels = 16
        for kernel, expanded, out_channels, use_se, activation, stride in BLOCKS:
            blocks.append(InvertedResidual(channels, kernel, expanded, out_channels, use_se, activation, stride))
            channels = out_channels
        blocks.append(_conv_bn(channels, 6 * channels, 1, activation="HS"))
        self.features = nn.Sequential(*blocks)
        self.classifier = nn.Sequential(nn.Linear(6 * channels, 1024), nn.Hardswish(), nn.Dropout(0.2),
                                        nn.Linear(1024, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``[N, num_classes]`` logits of an ``[N, 3, H, W]`` image batch."""
        x = nn.functional.adaptive_avg_pool2d(self.features(x), 1)
        return self.classifier(torch.flatten(x, 1))


def randomize(model: nn.Module, generator: torch.Generator, batches: int = 2, batch_size: int = 4) -> None:
    """Seeded random weights and non-trivial BatchNorm statistics for ``model``, in place (eval mode after).

    Convolutions (depthwise and squeeze-excite included) are Kaiming-normal over their fan-in, with
    small random biases where they have one; Linear layers N(0, 1/fan_in); BatchNorm scale in
    [0.5, 1.5) and shift N(0, 0.1^2). The running mean/variance are then the cumulative batch statistics
    of ``batches`` batches of ``batch_size`` natural-image crops (``models.data.statistics_images``:
    scikit-image photos that are neither calibration nor evaluation inputs), with only the BatchNorm
    layers in train mode (dropout and drop-connect stay off, so nothing reads the global RNG): this
    keeps every layer's output at a sane scale on photos, which neither the trivial 0/1 statistics nor
    those of white noise do with random weights. Only ``generator`` is drawn from (the crops' seed too).
    """
    norms = [layer for layer in model.modules() if isinstance(layer, nn.modules.batchnorm._BatchNorm)]
    with torch.no_grad():
        for layer in model.modules():
            if isinstance(layer, nn.Conv2d):
                fan_in = layer.weight[0].numel()
                layer.weight.copy_(torch.randn(layer.weight.shape, generator=generator) * (2.0 / fan_in) ** 0.5)
                if layer.bias is not None:
                    layer.bias.copy_(0.1 * torch.randn(layer.bias.shape, generator=generator))
            elif isinstance(layer, nn.Linear):
                layer.weight.copy_(torch.randn(layer.weight.shape, generator=generator) * layer.in_features ** -0.5)
                if layer.bias is not None:
                    layer.bias.copy_(0.01 * torch.randn(layer.bias.shape, generator=generator))
        for layer in norms:
            n = layer.num_features
            layer.weight.copy_(0.5 + torch.rand(n, generator=generator))
            layer.bias.copy_(0.1 * torch.randn(n, generator=generator))
            layer.reset_running_stats()
        momenta = [layer.momentum for layer in norms]
        model.eval()
        for layer in norms:  # BatchNorm alone in train mode: dropout stays off (deterministic, unscaled)
            layer.momentum = None  # cumulative average over the batches
            layer.train()
        images = torch.from_numpy(statistics_images(batches * batch_size, seed=int(
            torch.randint(2**31 - 1, (1,), generator=generator))))
        for batch in images.split(batch_size):
            model(batch)
        for layer, momentum in zip(norms, momenta):
            layer.momentum = momentum
    model.eval()


def load(seed: int = SEED) -> tuple[MobileNetV3Small, tuple[torch.Tensor]]:
    """Return ``(model, (image,))``: the model with weights from ``seed`` and the preprocessed chelsea photo."""
    from .data import photos

    with torch.random.fork_rng(devices=[]):  # default init draws from the global RNG; leave it untouched
        model = MobileNetV3Small()
    randomize(model, torch.Generator().manual_seed(seed))
    return model, (torch.from_numpy(preprocess(photos()["chelsea"])),)
