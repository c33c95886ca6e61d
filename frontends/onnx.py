"""Import an ONNX model (a path or a ModelProto) into a Relax IRModule with TVM's ONNX importer.

Weights may be initializers, Constant nodes or external data next to the file. Every input must have a
static shape: symbolic dimensions need a user-given shape. All unsupported operators are reported at once.

Before TVM's importer, ``fold_shapes`` runs onnxslim's constant folding and shape inference with the inputs'
concrete shapes (no fusions: every remaining node is one of the file's own ops), so a ``Reshape`` whose
target is computed by a ``Shape -> Gather -> Concat`` subgraph gets a constant target, which TVM's importer
requires.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path
from typing import Mapping, Sequence

import onnx
from google.protobuf.message import DecodeError
from onnx import external_data_helper, helper

from .errors import (
    FrontendError,
    InvalidModelError,
    MissingShapeError,
    ModelNotFoundError,
    UnsupportedOperatorError,
)
from .spec import ImportedModel, TensorSpec, output_specs

Shapes = Mapping[str, Sequence[int]]


def from_onnx(model: str | os.PathLike | onnx.ModelProto, shapes: Shapes | None = None) -> ImportedModel:
    """Import ``model``; ``shapes`` gives concrete shapes for inputs with symbolic dimensions."""
    proto, source = _load(model)
    _check_ops(proto.graph)
    inputs = _input_specs(proto.graph, dict(shapes or {}))
    proto = fold_shapes(proto, inputs)
    from tvm.relax.frontend.onnx import from_onnx as tvm_from_onnx

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mod = tvm_from_onnx(
                proto,
                shape_dict={s.name: list(s.shape) for s in inputs},
                dtype_dict={s.name: s.dtype for s in inputs},
                keep_params_in_input=False,
            )
    except Exception as exc:  # TVM raises many types; turn them into one clear line
        raise FrontendError(f"TVM could not import {source.get('path', 'the model')}: "
                            f"{type(exc).__name__}: {_first_line(exc)}") from exc
    outputs = output_specs(mod, [o.name for o in proto.graph.output])
    return ImportedModel(mod, inputs, outputs, source)


SEMANTIC_PRESERVING_ONLY = ["graph_fusion", "weight_tying"]
"""onnxslim optimizations ``fold_shapes`` skips: fusions (which may emit ops TVM does not import) and weight
tying; constant folding, dead-node and common-subexpression elimination stay."""


def fold_shapes(proto: onnx.ModelProto, inputs: Sequence[TensorSpec]) -> onnx.ModelProto:
    """``proto`` with its inputs' shapes fixed to ``inputs`` and every subgraph that depends only on shapes and
    constants folded into constants (onnxslim), the same function of the inputs."""
    import logging

    import onnxslim

    logging.getLogger("onnxslim").setLevel(logging.ERROR)
    shapes = [f"{spec.name}:{','.join(str(d) for d in spec.shape)}" for spec in inputs
              if spec.shape]  # a 0-d input has no dimension to fix (and onnxslim cannot parse "name:")
    try:
        return onnxslim.slim(proto, input_shapes=shapes or None, skip_optimizations=SEMANTIC_PRESERVING_ONLY)
    except Exception as exc:  # onnxslim raises many types: say which step failed, in one line
        raise FrontendError(f"folding the model's shape computations failed: {type(exc).__name__}: "
                            f"{_first_line(exc)}") from exc


def _load(model: str | os.PathLike | onnx.ModelProto) -> tuple[onnx.ModelProto, dict]:
    if isinstance(model, onnx.ModelProto):
        _require_resolved_external_data(model)
        proto, source = model, {"kind": "onnx"}
    else:
        path = Path(model)
        if not path.is_file():
            raise ModelNotFoundError(f"model file not found: {path}")
        try:
            proto = onnx.load(str(path), load_external_data=True)
        except DecodeError as exc:
            raise InvalidModelError(f"{path} is not an ONNX model, or it is truncated ({_first_line(exc)})") from exc
        except (FileNotFoundError, OSError, onnx.checker.ValidationError) as exc:
            raise InvalidModelError(f"{path}: cannot read its external data: {_first_line(exc)}") from exc
        source = {"kind": "onnx", "path": str(path.resolve()), "sha256": _sha256(path)}
    if proto.ir_version == 0 or not proto.graph.node:
        where = source.get("path", "the ModelProto")
        raise InvalidModelError(f"{where} is not an ONNX model (no graph), or it is truncated")
    try:
        onnx.checker.check_model(proto)
    except (onnx.checker.ValidationError, ValueError) as exc:
        where = source.get("path", "the ModelProto")
        raise InvalidModelError(f"{where} is not a valid ONNX model, or it is truncated: {_first_line(exc)}") from exc
    return proto, source


def _require_resolved_external_data(model: onnx.ModelProto) -> None:
    unresolved = [t.name for t in external_data_helper._get_all_tensors(model)
                  if external_data_helper.uses_external_data(t) and not t.HasField("raw_data")]
    if unresolved:
        raise InvalidModelError(
            f"the ModelProto refers to external data it does not hold ({', '.join(unresolved[:3])}): "
            "pass the model's path instead, or load it with onnx.load(path)")


def _check_ops(graph: onnx.GraphProto) -> None:
    from tvm.relax.frontend.onnx.onnx_frontend import _get_convert_map

    known = set(_get_convert_map()) | {"Constant", "If"}
    unsupported: dict[str, list[str]] = {}
    for node in _all_nodes(graph):
        if node.op_type not in known or node.domain not in ("", "ai.onnx"):
            label = f"{node.domain}::{node.op_type}" if node.domain not in ("", "ai.onnx") else node.op_type
            unsupported.setdefault(label, []).append(node.name or f"<unnamed {node.op_type}>")
    if unsupported:
        raise UnsupportedOperatorError(unsupported)


def _all_nodes(graph: onnx.GraphProto):
    for node in graph.node:
        yield node
        for attr in node.attribute:
            subgraphs = [attr.g] if attr.HasField("g") else list(attr.graphs)
            for sub in subgraphs:
                yield from _all_nodes(sub)


def _input_specs(graph: onnx.GraphProto, shapes: dict[str, Sequence[int]]) -> list[TensorSpec]:
    initializers = {t.name for t in graph.initializer}
    graph_inputs = [i for i in graph.input if i.name not in initializers]
    unknown = set(shapes) - {i.name for i in graph_inputs}
    if unknown:
        raise FrontendError(f"shape given for unknown input(s) {sorted(unknown)}; "
                            f"the model's inputs are {[i.name for i in graph_inputs]}")
    specs, missing = [], []
    for value in graph_inputs:
        tensor_type = value.type.tensor_type
        dtype = str(helper.tensor_dtype_to_np_dtype(tensor_type.elem_type))
        dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else (d.dim_param or "?")
                for d in tensor_type.shape.dim]
        if value.name in shapes:
            shape = tuple(int(d) for d in shapes[value.name])
            if len(shape) != len(dims) or any(isinstance(d, int) and d != s for d, s in zip(dims, shape)):
                raise FrontendError(f"shape {list(shape)} given for input '{value.name}' does not fit "
                                    f"its declared shape {dims}")
        elif all(isinstance(d, int) for d in dims) and tensor_type.HasField("shape"):
            shape = tuple(dims)
        else:
            missing.append(f"'{value.name}' {dims}")
            continue
        specs.append(TensorSpec(value.name, shape, dtype))
    if missing:
        raise MissingShapeError(
            f"input(s) with symbolic dimensions need a concrete shape: {', '.join(missing)}; "
            "give it as --shape NAME=1x3x224x224 (CLI) or shapes={'NAME': (1, 3, 224, 224)} (API)")
    return specs


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
