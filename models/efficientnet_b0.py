"""EfficientNet-B0 (Tan & Le 2019) from transformers' implementation, with random weights: not for accuracy.

Built with ``transformers.EfficientNetForImageClassification`` from an ``EfficientNetConfig`` set to B0:
note that ``EfficientNetConfig()``'s defaults are **B7** (width 2.0, depth 3.1, 600x600, hidden_dim
2560, 2 labels), so :data:`B0` overrides width/depth coefficients 1.0, image size 224, hidden_dim
1280, dropout 0.2 (the values of ``google/efficientnet-b0``) and 1000 labels. Nothing is downloaded
(no ``from_pretrained``; ``HF_HUB_OFFLINE=1`` is set anyway). 5,288,548 parameters, ~0.39G MACs at
224x224: SiLU everywhere, squeeze-excite with sigmoid gating, TF-style asymmetric zero padding before
the stride-2 depthwise convs.

:class:`EfficientNetB0` wraps the HF model so that ``torch.export`` sees a plain module returning the
``[N, 1000]`` logits tensor (not a ``ModelOutput``). The wrapper also replaces the HF pooler,
``AvgPool2d(kernel=hidden_dim, ceil_mode=True)`` (a 1280x1280 window over the 7x7 map, which torch
clips to the map), with the global average it computes, ``AdaptiveAvgPool2d(1)``: the same numbers,
without depending on how an importer treats a pooling window larger than its input. Dropout and
drop-connect are identities in eval mode.

Weights come from a fixed seed with ``models.mobilenet_v3_small.randomize`` (Kaiming-normal convs,
random BatchNorm scale/shift, running statistics measured on natural-image crops that are neither
calibration nor evaluation inputs), so BN folding is exercised and activations keep a sane scale.
Input ``(1, 3, 224, 224)`` float32 RGB with ImageNet normalisation (``models.data.imagenet_preprocess``);
the example input is the chelsea photo. Output: 1000 logits.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from .data import imagenet_preprocess as preprocess  # noqa: F401  (the input this model expects)

INPUT_NAMES = ("input",)
DESCRIPTION = ("EfficientNet-B0 (transformers), RANDOM weights (speed/agreement only, not accuracy), "
               "1x3x224x224 float32 RGB, ImageNet mean/std, 1000 logits")
SEED = 0

B0 = dict(width_coefficient=1.0, depth_coefficient=1.0, image_size=224, hidden_dim=1280, dropout_rate=0.2,
          num_labels=1000)
"""``EfficientNetConfig`` overrides that turn its B7 defaults into B0 (and its 2 labels into 1000)."""


class EfficientNetB0(nn.Module):
    """``EfficientNetForImageClassification`` returning the logits tensor, with a global-average pooler."""

    def __init__(self, classifier: nn.Module):
        super().__init__()
        self.net = classifier
        self.net.efficientnet.pooler = nn.AdaptiveAvgPool2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``[N, 1000]`` logits of an ``[N, 3, 224, 224]`` image batch."""
        return self.net(pixel_values=x, return_dict=False)[0]


def load(seed: int = SEED) -> tuple[EfficientNetB0, tuple[torch.Tensor]]:
    """Return ``(model, (image,))``: the model with weights from ``seed`` and the preprocessed chelsea photo."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import EfficientNetConfig, EfficientNetForImageClassification

    from .data import photos
    from .mobilenet_v3_small import randomize

    with torch.random.fork_rng(devices=[]):  # HF init draws from the global RNG; leave it untouched
        torch.manual_seed(seed)
        model = EfficientNetB0(EfficientNetForImageClassification(EfficientNetConfig(**B0)))
    randomize(model, torch.Generator().manual_seed(seed))
    return model, (torch.from_numpy(preprocess(photos()["chelsea"])),)
