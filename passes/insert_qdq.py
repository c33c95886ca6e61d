"""insert_qdq: put a quantize -> dequantize pair on every anchor and integer weights on every quantized layer.

Requires: a float module (one dataflow block, weights constant: after ``fold_constant`` / ``fold_batchnorm``),
per-layer ``LayerSpec``s and the calibrated (lo, hi) of every anchor of ``plan_quantization`` under those
specs (the tensors ``expose_activations`` returned to calibration).
Guarantees: each anchor's integer readers (quantized layers, integer adds / means, pass-through ops leading
to them) read ``dequantize(quantize(t))`` (4-bit: clipped to its range in between);
each quantized layer reads ``dequantize(W_q)`` with ``W_q`` an int8 constant on its per-channel grid. The
module is the quantized model in QDQ form: run as is (after ``fold_constant``) it simulates the integer model
in float, and ``lower_integer`` turns it into integer arithmetic. Layers with ``quantize=False`` are untouched.
Numerics:
    activations, asymmetric (uint):  s = (hi - lo) / (2^a - 1),  z = clamp(round(-lo / s), 0, 2^a - 1)
    activations, symmetric (int):    s = max(|lo|, |hi|) / (2^(a-1) - 1),  z = 0
    weights, per output channel o:   s_w[o] = max(max|W[o]| / (2^(b-1) - 1), |bias[o]| / (s_x 2^30)),
                                     W_q = clamp(round(W / s_w), +-(2^(b-1) - 1))
    weights in groups (a spec's ``weight_group`` G, a matmul [K, N] with K % G == 0; DGQ's dual grain):
        per group j of G rows and column n, sigma[j, n] = max|W[j, n]| / (2^(b-1) - 1), written as
        s[n] * m[j, n] with s[n] = max_j sigma[j, n] / 255 (a floor as above) and m = ceil(sigma / s), an
        integer in [1, 255] (ceil: no weight is clipped);  Q = clamp(round(W / (s m)), +-(2^(b-1) - 1));
        the layer's integer weight is m * Q (int16, |m Q| <= 1785), its per-channel scale s
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np
import tvm
from tvm import relax

from .dataflow import function_attrs, main_block, map_vars, op_name, var_args, with_main
from .quant_plan import Anchor, plan_quantization, quantizable_layers
from .quant_policy import LayerSpec
from .registry import PassError, register_pass


@dataclass(frozen=True)
class ActivationParams:
    """Scale, zero point and integer range of a quantized activation."""

    scale: float
    zero_point: int
    qmin: int
    qmax: int
    dtype: str

    @classmethod
    def from_range(cls, lo: float, hi: float, bits: int, symmetric: bool) -> "ActivationParams":
        lo, hi = min(lo, 0.0), max(hi, 0.0)
        if symmetric:
            qmax = 2 ** (bits - 1) - 1
            scale = max(abs(lo), abs(hi)) / qmax or 1.0
            return cls(scale, 0, -qmax, qmax, "int8")
        qmax = 2**bits - 1
        scale = (hi - lo) / qmax or 1.0
        return cls(scale, int(np.clip(round(-lo / scale), 0, qmax)), 0, qmax, "uint8")


BIAS_LIMIT = 2**30
"""The largest |bias| / (s_x s_w) a channel may have: the int32 bias, and (acc + bias) * b < 2^63 in the
requantize (b < 2^31), hold for every channel whose weight scale respects it (``min_scale``)."""


def quantize_weight(weight: np.ndarray, bits: int, axis: int,
                    min_scale: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel symmetric quantization of ``weight`` along ``axis``: (int8 values, float32 scales);
    ``min_scale`` (per channel) floors the scales."""
    qmax = 2 ** (bits - 1) - 1
    reduce_axes = tuple(i for i in range(weight.ndim) if i != axis)
    peak = np.abs(weight).max(axis=reduce_axes)
    scale = np.where(peak > 0, peak / qmax, 1.0)
    if min_scale is not None:
        scale = np.maximum(scale, min_scale)
    scale = scale.astype(np.float32)
    shape = [1] * weight.ndim
    shape[axis] = -1
    values = np.clip(np.round(weight / scale.reshape(shape)), -qmax, qmax).astype(np.int8)
    return values, scale


GROUP_MULTIPLIER_MAX = 255
"""Group scales are integer multiples m in [1, 255] of the channel's scale (8-bit, as DGQ's)."""


def quantize_weight_groups(weight: np.ndarray, bits: int, group: int,
                           min_scale: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Group-wise symmetric quantization of a [K, N] matmul weight, ``group`` reduction rows per group:
    (int16 values m * Q, float32 per-column scales s); see the module's Numerics."""
    qmax = 2 ** (bits - 1) - 1
    rows, columns = weight.shape
    if rows % group:
        raise ValueError(f"a weight of {rows} reduction rows does not split into groups of {group}")
    sigma = np.abs(weight.astype(np.float64)).reshape(rows // group, group, columns).max(axis=1) / qmax
    scale = sigma.max(axis=0) / GROUP_MULTIPLIER_MAX
    scale = np.where(scale > 0, scale, 1.0)
    if min_scale is not None:
        scale = np.maximum(scale, min_scale)
    scale = scale.astype(np.float32)
    multiplier = np.clip(np.ceil(sigma / scale), 1, GROUP_MULTIPLIER_MAX)
    step = np.repeat(multiplier, group, axis=0) * scale.astype(np.float64)
    values = np.clip(np.round(weight / step), -qmax, qmax)
    return (np.repeat(multiplier, group, axis=0) * values).astype(np.int16), scale


def rounded_weight(weight: np.ndarray, bits: int, axis: int) -> np.ndarray:
    """``weight`` rounded to its per-channel ``bits``-bit grid and scaled back (float, same dtype)."""
    values, scale = quantize_weight(weight, bits, axis)
    shape = [1] * weight.ndim
    shape[axis] = -1
    return (values * scale.reshape(shape)).astype(weight.dtype)


def weight_axis(call: relax.Call) -> int:
    """The output-channel axis of a layer's weight: O of OIHW for conv2d, N of [K, N] for matmul."""
    return 0 if call.op.name == "relax.nn.conv2d" else call.args[1].ty.ndim - 1


def grouped(call: relax.Call, spec: LayerSpec) -> bool:
    """Whether the layer ``call`` gets group-wise weights under ``spec``: a matmul with a 2-D weight whose
    reduction splits into the spec's groups (other layers keep per-channel scales)."""
    weight = call.args[1].ty
    return (spec.weight_group is not None and call.op.name == "relax.matmul" and weight.ndim == 2
            and int(weight.shape[0]) % spec.weight_group == 0)


@register_pass("insert_qdq")
def insert_qdq(mod: tvm.IRModule, specs: Mapping[str, LayerSpec],
               ranges: Mapping[str, tuple[float, float]]) -> tvm.IRModule:
    """Relax -> Relax: quantize/dequantize pairs on the anchors, dequantized integer weights on the layers."""
    func = mod["main"]
    block = main_block(mod, "insert_qdq")
    plan = plan_quantization(func, specs)
    missing = [name for name in plan.anchors if name not in ranges]
    if missing:
        raise PassError(f"insert_qdq: no calibrated range for tensor(s) {missing}")
    layers = {call: name for name, call in quantizable_layers(func) if specs.get(name, LayerSpec()).quantize}
    anchors = {anchor.var: anchor for anchor in plan.anchors.values()}
    consumers: dict[relax.Var, list[relax.Expr]] = {}
    for binding in block.bindings:
        for arg in var_args(binding.value):
            consumers.setdefault(arg, []).append(binding.value)
    replaced: dict[relax.Var, relax.Expr] = {}
    builder = relax.BlockBuilder()
    with builder.function("main", func.params, attrs=function_attrs(func)):
        with builder.dataflow():
            for param in func.params:
                if param in anchors:
                    replaced[param] = _qdq(builder, param, anchors[param], ranges)
            for binding in block.bindings:
                # integer readers see the quantized tensor; float ops keep reading the float one
                value = binding.value
                if binding.var in plan.integer_readers:
                    value = map_vars(value, lambda v: replaced.get(v, v))
                if binding.value in layers:
                    name = layers[binding.value]
                    input_scale = activation_params(plan.anchors[plan.layer_inputs[name]],
                                                     ranges[plan.layer_inputs[name]]).scale
                    value = _with_integer_weight(builder, value, specs[name],
                                                 _bias_floor(binding.var, consumers, input_scale))
                builder.emit_normalized(relax.VarBinding(binding.var, builder.normalize(value)))
                if binding.var in anchors:
                    replaced[binding.var] = _qdq(builder, binding.var, anchors[binding.var], ranges)
            output = func.body.body
        builder.emit_func_output(output)
    return with_main(mod, builder)


def activation_params(anchor: Anchor, value_range: tuple[float, float]) -> ActivationParams:
    """The scale and zero point of an anchor from its calibrated range and its spec."""
    return ActivationParams.from_range(*value_range, anchor.spec.activation_bits, anchor.spec.symmetric_activations)


def _qdq(builder: relax.BlockBuilder, var: relax.Var, anchor: Anchor,
         ranges: Mapping[str, tuple[float, float]]) -> relax.Var:
    act = activation_params(anchor, ranges[anchor.name])
    scale = relax.const(np.float32(act.scale))
    zero = relax.const(np.array(act.zero_point, dtype=act.dtype))
    q = builder.emit(relax.op.quantize(var, scale, zero, axis=-1, out_dtype=act.dtype))
    if act.qmax < np.iinfo(act.dtype).max:  # narrower than the container (4-bit)
        q = builder.emit(relax.op.clip(q, act.qmin, act.qmax))
    return builder.emit(relax.op.dequantize(q, scale, zero, axis=-1, out_dtype="float32"))


def _bias_floor(var: relax.Var, consumers, input_scale: float) -> np.ndarray | None:
    """Per output channel, the smallest weight scale that keeps the layer's bias (the constant its only
    consumer adds) within ``BIAS_LIMIT`` accumulator units: a channel whose weights BatchNorm folding made
    tiny would otherwise need a bias of ~1e10 units and overflow the int64 requantize."""
    users = consumers.get(var, [])
    if len(users) != 1 or op_name(users[0]) != "relax.add":
        return None
    constants = [a for a in users[0].args if isinstance(a, tvm.ir.expr.GenericConst)]
    if len(constants) != 1:
        return None
    bias = np.abs(constants[0].value.numpy().astype(np.float64)).reshape(-1)
    return bias / (input_scale * BIAS_LIMIT)


def _with_integer_weight(builder: relax.BlockBuilder, call: relax.Call, spec: LayerSpec,
                         min_scale: np.ndarray | None = None) -> relax.Call:
    axis = weight_axis(call)
    channels = int(call.args[1].ty.shape[axis])
    if min_scale is not None and min_scale.size not in (1, channels):
        min_scale = None
    weight = call.args[1].value.numpy()
    if grouped(call, spec):
        values, w_scale = quantize_weight_groups(weight, spec.weight_bits, spec.weight_group, min_scale)
    else:
        values, w_scale = quantize_weight(weight, spec.weight_bits, axis, min_scale)
    weight = builder.emit(relax.op.dequantize(relax.const(values), relax.const(w_scale),
                                              relax.const(np.zeros((), values.dtype)), axis=axis,
                                              out_dtype="float32"))
    return relax.Call(call.op, [call.args[0], weight] + list(call.args[2:]), call.attrs)
