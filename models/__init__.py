"""Registry of the real models the compiler is measured on, and their ONNX export.

Each model lives in its own module with a ``load() -> (module, example_inputs)`` function (the
``module:function`` form the CLI accepts), an ``INPUT_NAMES`` tuple and a ``DESCRIPTION`` string.
``get(name)`` wraps them in a :class:`ModelCase`. ``import models`` is cheap: torch and the weights are
loaded only when a model is asked for, and every ``get`` builds a fresh module (callers may mutate it).
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

if TYPE_CHECKING:
    import torch

_MODULES: dict[str, str] = {
    "efficientnet-b0": "models.efficientnet_b0",
    "efficientnet-lite0": "models.efficientnet_lite0",
    "minilm": "models.minilm",
    "minilm-outliers": "models.minilm_outliers",
    "mnist-cnn": "models.mnist_cnn",
    "mobilenet-v3-small": "models.mobilenet_v3_small",
    "resnet18": "models.resnet18",
}
"""Registered name -> module holding ``load``, ``INPUT_NAMES`` and ``DESCRIPTION``."""

ONNX_OPSET = 18
"""Default ONNX opset of :func:`export_onnx` (TVM's Relax ONNX importer handles 18 well)."""


@dataclass(frozen=True)
class ModelCase:
    """A model ready to compile: a float32 module in eval mode and batch-1 example inputs."""

    name: str
    module: torch.nn.Module
    example_inputs: tuple[torch.Tensor, ...]
    input_names: tuple[str, ...]
    description: str


def names() -> list[str]:
    """Return the registered model names, sorted."""
    return sorted(_MODULES)


def get(name: str) -> ModelCase:
    """Load the model registered as ``name``; an unknown name raises ``KeyError`` listing the valid ones."""
    if name not in _MODULES:
        raise KeyError(f"unknown model {name!r}; valid names: {', '.join(names())}")
    source = importlib.import_module(_MODULES[name])
    module, example_inputs = source.load()
    return ModelCase(name, module, tuple(example_inputs), tuple(source.INPUT_NAMES), source.DESCRIPTION)


def export_onnx(case: ModelCase, path: str | Path, opset: int = ONNX_OPSET, optimize: bool = True) -> Path:
    """Export ``case`` to one self-contained ``.onnx`` file at ``path`` and return the path.

    Uses the dynamo exporter (``torch.export``; the TorchScript exporter gives wrong numbers on MiniLM),
    static shapes taken from the example inputs, inputs named ``case.input_names``, outputs ``output_0..``,
    weights embedded in the file (``external_data=False``; no ``.onnx.data`` file beside it).
    ``optimize=True`` runs onnxscript's optimizer, which constant-folds and *folds BatchNorm into Conv*;
    ``optimize=False`` keeps ``BatchNormalization`` nodes but leaves Shape/Expand/CastLike clutter.
    """
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        outputs = case.module(*case.example_inputs)
    count = len(outputs) if isinstance(outputs, (tuple, list)) else 1
    with _quiet_exporter():
        torch.onnx.export(
            case.module, case.example_inputs, str(path), dynamo=True, external_data=False, opset_version=opset,
            optimize=optimize, input_names=list(case.input_names),
            output_names=[f"output_{i}" for i in range(count)], verbose=False,
        )
    return path


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Hide the exporter's "torchvision is not installed" log lines and FutureWarnings for the block."""
    registration = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registration.level
    registration.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        registration.setLevel(level)
