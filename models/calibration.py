"""Calibration samples for each registry model, the convention of the tests and benchmarks.

    samples = calibration.samples("efficientnet-b0")     # [{input name: array}, ...]

MNIST: its first 64 training digits. The image models: three bundled photos (``CALIBRATION_PHOTOS``) and
their mirror images, each through the model's own preprocessing (ResNet-18, random weights with no
preprocessing of its own, takes ImageNet normalisation). MiniLM (and ``minilm-outliers``): the first 8
bundled sentences. Evaluation images come from the other photos (``EVALUATION_PHOTOS``, through
``data.held_out_views``), never these.
"""

from __future__ import annotations

import numpy as np

from . import data

CALIBRATION_PHOTOS = ("chelsea", "coffee", "china")
EVALUATION_PHOTOS = ("flower", "grace_hopper")


def preprocess(name: str):
    """The image preprocessing of registry model ``name`` (photo uint8 HxWx3 -> 1x3x224x224 float32)."""
    if name == "efficientnet-lite0":
        from .efficientnet_lite0 import preprocess as effnet

        return effnet
    return data.imagenet_preprocess


def samples(name: str) -> list[dict[str, np.ndarray]]:
    """The calibration samples of registry model ``name``."""
    if name == "mnist-cnn":
        from .mnist_cnn import load_split

        return [{"input": d[None]} for d in load_split()[0][:64]]
    if name in ("minilm", "minilm-outliers"):
        from .minilm import tokenize

        return [tokenize([s]) for s in data.sentences()[:8]]
    photos = data.photos()
    images = [preprocess(name)(photos[p]) for p in CALIBRATION_PHOTOS]
    return [{"input": x} for x in images] + [{"input": np.ascontiguousarray(x[..., ::-1])} for x in images]


def evaluation_images(name: str, count: int = 8) -> list[np.ndarray]:
    """``count`` held-out views (crops, flips) of the evaluation photos, preprocessed for ``name``."""
    views = data.held_out_views(count=40, seed=1)
    chosen = [v for key, v in views.items() if key.split("/")[0] in EVALUATION_PHOTOS][:count]
    return [preprocess(name)(v) for v in chosen]
