"""Classify real photos with a compiled EfficientNet-Lite0 artifact and compare with PyTorch.

    python examples/classify_photos.py build/efficientnet-lite0
"""

from __future__ import annotations

import sys

import numpy as np
import torch

import compiler
import models
from models import data, efficientnet_lite0


def main(artifact: str) -> int:
    compiled = compiler.load(artifact)
    reference = models.get("efficientnet-lite0").module
    for name, photo in data.photos().items():
        x = efficientnet_lite0.preprocess(photo)
        ours = compiled.run(x)["output_0"][0]
        with torch.no_grad():
            theirs = reference(torch.from_numpy(x)).numpy()[0]
        rel = np.abs(ours - theirs).max() / np.abs(theirs).max()
        top5 = np.argsort(ours)[::-1][:5].tolist()
        same = "same" if top5[0] == int(theirs.argmax()) else "DIFFERENT"
        print(f"{name:13s} top-5 ImageNet classes {top5}  top-1 vs PyTorch: {same}  max rel err {rel:.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "build/efficientnet-lite0"))
