"""smooth_quant: migrate activation outliers into the weights (SmoothQuant, Xiao et al. 2023) where a
LayerNorm feeds linears only.

Requires: a float ``main`` of one dataflow block, weights constant (after ``fold_constant``); per smoothable
LayerNorm (``smoothable``: its output read only by matmuls with a constant [K, N] weight, through reshapes
that keep the last axis) a positive scale per channel, keyed by the LayerNorm's variable name.
Guarantees: the same function in exact arithmetic: the LayerNorm's gamma and beta are divided by s and the
input rows of every matmul it feeds multiplied by s, so each linear reads X / s against W' = s W.
LayerNorms whose output also reaches anything else (a residual add: post-LN transformers) are left alone.
Numerics (channel c, migration strength alpha, from calibration: ``compiler.quantization.smoothing``):
    s_c = max|X_c|^alpha / max|W_c|^(1 - alpha)     max over the calibration samples and over the rows c
                                                     of every matmul it feeds; s_c = 1 where either is 0
    gamma'_c = gamma_c / s_c,  beta'_c = beta_c / s_c,  W'[c, :] = W[c, :] * s_c   (float64, then float32)
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import tvm
from tvm import relax

from .dataflow import function_attrs, main_block, op_name, var_args, with_main
from .quant_plan import quantizable_layers
from .registry import PassError, register_pass


def smoothable(func: relax.Function) -> dict[str, list[str]]:
    """Each LayerNorm over the last axis with constant gamma and beta whose output only matmuls with a
    constant weight read as data (through reshapes that keep the last axis): {its variable's name: the
    names of those layers}."""
    bindings = [(b.var, b.value) for b in func.body.blocks[0].bindings]
    consumers: dict[relax.Var, list[tuple[relax.Var, relax.Expr]]] = {}
    for var, value in bindings:
        for arg in var_args(value):
            consumers.setdefault(arg, []).append((var, value))
    matmuls = {call: name for name, call in quantizable_layers(func) if op_name(call) == "relax.matmul"}
    found = {}
    for var, value in bindings:
        if op_name(value) != "relax.nn.layer_norm" or not _over_last_axis(value) or not all(
                isinstance(a, tvm.ir.expr.GenericConst) for a in value.args[1:]):
            continue
        layers, frontier, only_linears = [], [var], True
        while frontier and only_linears:
            source = frontier.pop()
            for user, call in consumers.get(source, []):
                if call in matmuls and call.args[0].same_as(source):
                    layers.append(matmuls[call])
                elif op_name(call) == "relax.reshape" and _keeps_last_axis(call):
                    frontier.append(user)
                else:
                    only_linears = False
        if only_linears and layers:
            found[var.name] = layers
    return found


def _over_last_axis(norm: relax.Call) -> bool:
    ndim = len(norm.args[0].ty.shape)
    return [int(a) % ndim for a in norm.attrs.axes] == [ndim - 1]


def _keeps_last_axis(call: relax.Call) -> bool:
    return int(call.args[0].ty.shape[-1]) == int(call.ty.shape[-1])


@register_pass("smooth_quant")
def smooth_quant(mod: tvm.IRModule, scales: Mapping[str, np.ndarray] | None = None) -> tvm.IRModule:
    """Relax -> Relax: each smoothable LayerNorm named in ``scales`` divides its gamma and beta by its scale
    and the matmuls it feeds multiply their weight rows by it (the same function)."""
    scales = {name: np.asarray(s, np.float64) for name, s in (scales or {}).items()}
    func = mod["main"]
    block = main_block(mod, "smooth_quant")
    targets = smoothable(func)
    unknown = sorted(set(scales) - set(targets))
    if unknown:
        raise PassError(f"smooth_quant: {unknown} are not smoothable LayerNorms; smoothable: {sorted(targets)}")
    for name, s in scales.items():
        if not np.all(np.isfinite(s)) or np.any(s <= 0):
            raise PassError(f"smooth_quant: the scales of {name} must be finite and positive")
    by_layer = {layer: scales[name] for name in scales for layer in targets[name]}
    layer_of = {call: name for name, call in quantizable_layers(func)}
    builder = relax.BlockBuilder()
    with builder.function("main", func.params, attrs=function_attrs(func)):
        with builder.dataflow():
            for binding in block.bindings:
                value = binding.value
                if binding.var.name in scales and op_name(value) == "relax.nn.layer_norm":
                    s = scales[binding.var.name]
                    value = relax.Call(value.op, [value.args[0], _divided(value.args[1], s),
                                                  _divided(value.args[2], s)], value.attrs)
                elif layer_of.get(value) in by_layer:
                    weight = value.args[1].value.numpy()
                    scaled = (weight.astype(np.float64) * by_layer[layer_of[value]].reshape(-1, 1)).astype(weight.dtype)
                    value = relax.Call(value.op, [value.args[0], relax.const(scaled), *value.args[2:]], value.attrs)
                builder.emit_normalized(relax.VarBinding(binding.var, builder.normalize(value)))
            output = func.body.body
        builder.emit_func_output(output)
    return with_main(mod, builder)


def _divided(constant: relax.Constant, scale: np.ndarray) -> relax.Constant:
    values = constant.value.numpy()
    return relax.const((values.astype(np.float64) / scale).astype(values.dtype))
