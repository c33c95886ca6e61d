"""Resolve what a user names on the command line into something ``compile`` takes.

    model.onnx                 an ONNX file
    package.module:function    a function returning (torch module, example inputs)
    efficientnet-lite0         a model registered in ``models`` (see ``models.names()``)
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from frontends.errors import FrontendError, ModelNotFoundError


@dataclass
class Source:
    """A resolved model: an ONNX path, or a torch module with example inputs, plus how to find it again."""

    spec: str
    onnx_path: Path | None = None
    module: Any = None
    example_inputs: tuple = ()
    input_names: tuple[str, ...] | None = None
    description: dict[str, Any] = field(default_factory=dict)

    @property
    def is_torch(self) -> bool:
        return self.module is not None


def resolve(spec: str) -> Source:
    """Turn ``spec`` into a ``Source``; unknown specs raise an error listing the accepted forms."""
    path = Path(spec)
    if path.suffix == ".onnx" or path.is_file():
        if not path.is_file():
            raise ModelNotFoundError(f"model file not found: {path}")
        return Source(spec, onnx_path=path)
    if ":" in spec:
        return _from_function(spec)
    registered = _registered_models()
    if spec in registered:
        import models

        case = models.get(spec)
        return Source(spec, module=case.module, example_inputs=case.example_inputs,
                      input_names=case.input_names, description={"kind": "torch", "model": spec})
    raise ModelNotFoundError(f"'{spec}' is not a file, a module:function, or a registered model "
                             f"({', '.join(registered) or 'none installed'})")


def _from_function(spec: str) -> Source:
    module_name, _, function_name = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise FrontendError(f"cannot import module '{module_name}' of {spec}: {exc}") from exc
    function = getattr(module, function_name, None)
    if not callable(function):
        raise FrontendError(f"module '{module_name}' has no function '{function_name}'")
    result = function()
    if not (isinstance(result, tuple) and len(result) in (2, 3)):
        raise FrontendError(f"{spec} must return (torch module, example inputs[, input names]), "
                            f"got {type(result).__name__}")
    names = result[2] if len(result) == 3 else getattr(module, "INPUT_NAMES", None)
    inputs = result[1] if isinstance(result[1], (tuple, list)) else (result[1],)
    return Source(spec, module=result[0], example_inputs=tuple(inputs),
                  input_names=tuple(names) if names else None, description={"kind": "torch", "function": spec})


def _registered_models() -> list[str]:
    try:
        import models
    except ImportError:
        return []
    return models.names()
