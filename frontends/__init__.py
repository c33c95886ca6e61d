"""Frontends: ONNX files and PyTorch modules in, a float Relax IRModule (plus tensor specs) out."""

from .errors import (
    FrontendError,
    InvalidModelError,
    MissingShapeError,
    ModelNotFoundError,
    UnsupportedOperatorError,
)
from .onnx import from_onnx
from .spec import ImportedModel, TensorSpec
from .torch import from_torch

__all__ = [
    "FrontendError", "ImportedModel", "InvalidModelError", "MissingShapeError", "ModelNotFoundError",
    "TensorSpec", "UnsupportedOperatorError", "from_onnx", "from_torch",
]
