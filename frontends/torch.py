"""Import a ``torch.nn.Module`` into a Relax IRModule through ``torch.export`` and TVM's importer.

The module is traced in eval mode at the shapes of ``example_inputs`` (static shapes); weights become
constants of the module. Inputs are named after ``forward``'s parameters unless ``input_names`` is given.
"""

from __future__ import annotations

import inspect
import warnings
from typing import Any, Sequence

from .errors import FrontendError, UnsupportedOperatorError
from .spec import ImportedModel, TensorSpec, output_specs


def from_torch(module: Any, example_inputs: Sequence[Any], input_names: Sequence[str] | None = None,
               source: dict | None = None) -> ImportedModel:
    """Export ``module`` at ``example_inputs`` and import it; returns the float Relax module."""
    import torch

    if not isinstance(module, torch.nn.Module):
        raise FrontendError(f"expected a torch.nn.Module, got {type(module).__name__}")
    args = tuple(example_inputs) if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
    if not args or not all(isinstance(a, torch.Tensor) for a in args):
        raise FrontendError("example_inputs must be a non-empty tuple of torch.Tensor, "
                            f"got {[type(a).__name__ for a in args] or 'nothing'}")
    names = list(input_names) if input_names else _forward_names(module, len(args))
    if len(names) != len(args):
        raise FrontendError(f"{len(names)} input names for {len(args)} example inputs")
    module = module.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch 2.13's own pytree deprecation noise
        try:
            with torch.no_grad():
                exported = torch.export.export(module, args)
        except Exception as exc:
            raise FrontendError(f"torch.export failed: {type(exc).__name__}: {_first_line(exc)}") from exc
        mod = _import(exported)
    inputs = [TensorSpec(n, tuple(a.shape), str(a.dtype).removeprefix("torch.")) for n, a in zip(names, args)]
    return ImportedModel(mod, inputs, output_specs(mod), dict(source or {"kind": "torch"}))


def _import(exported: Any):
    from tvm.relax.frontend.torch import from_exported_program

    try:
        exported = exported.run_decompositions()
    except Exception as exc:
        raise FrontendError(f"torch.export could not decompose the program: {_first_line(exc)}") from exc
    missing = _unsupported_targets(exported)
    if missing:
        raise UnsupportedOperatorError(missing)
    try:
        return from_exported_program(exported, keep_params_as_input=False, run_ep_decomposition=False)
    except Exception as exc:
        raise FrontendError(f"TVM could not import the exported program: {type(exc).__name__}: "
                            f"{_first_line(exc)}") from exc


def _unsupported_targets(exported: Any) -> dict[str, list[str]]:
    """Operators of the decomposed graph that TVM's translator has no converter for, with node names."""
    from tvm.relax.frontend.torch.exported_program_translator import ExportedProgramImporter

    known = ExportedProgramImporter().create_convert_map()
    missing: dict[str, list[str]] = {}
    for node in exported.graph.nodes:
        if node.op == "call_function" and node.target.__name__ not in known:
            missing.setdefault(node.target.__name__, []).append(node.name)
    return missing


def _forward_names(module: Any, count: int) -> list[str]:
    params = [p.name for p in inspect.signature(module.forward).parameters.values()
              if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return params[:count] if len(params) >= count else [f"input_{i}" for i in range(count)]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
