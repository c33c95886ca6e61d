"""insert_qdq: put quantize -> dequantize pairs on the inputs and weights of every quantized layer.

Requires: the module ``expose_activations`` was computed from (same layer names: ``conv2d_0``, ``matmul_0``,
...; weights constant, so after ``fold_constant`` / ``fold_batchnorm``), the per-layer specs of a
``QuantPolicy`` and the calibrated input range of each layer.
Guarantees: each quantized layer reads ``dequantize(quantize(x))`` and a constant weight already rounded to
its integer grid and dequantized per output channel; layers with ``quantize=False`` are untouched. The
module still computes in float (simulated quantization): ``lower_integer`` turns these pairs into integer
kernels.
Numerics:
    activations, asymmetric (uint):  s = (hi - lo) / (2^a - 1),  z = clamp(round(-lo / s), 0, 2^a - 1)
    activations, symmetric (int):    s = max(|lo|, |hi|) / (2^(a-1) - 1),  z = 0
    weights, per output channel o:   s_w[o] = max|W[o]| / (2^(b-1) - 1),  W_q = clamp(round(W / s_w), +-(2^(b-1) - 1))
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np
import tvm
from tvm import relax

from .dataflow import function_attrs, main_block, with_main
from .expose_activations import quantizable_layers
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


def quantize_weight(weight: np.ndarray, bits: int, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel symmetric quantization of ``weight`` along ``axis``: (int8 values, float32 scales)."""
    qmax = 2 ** (bits - 1) - 1
    reduce_axes = tuple(i for i in range(weight.ndim) if i != axis)
    peak = np.abs(weight).max(axis=reduce_axes)
    scale = np.where(peak > 0, peak / qmax, 1.0).astype(np.float32)
    shape = [1] * weight.ndim
    shape[axis] = -1
    values = np.clip(np.round(weight / scale.reshape(shape)), -qmax, qmax).astype(np.int8)
    return values, scale


def weight_axis(call: relax.Call) -> int:
    """The output-channel axis of a layer's weight: O of OIHW for conv2d, N of [K, N] for matmul."""
    return 0 if call.op.name == "relax.nn.conv2d" else call.args[1].ty.ndim - 1


@register_pass("insert_qdq")
def insert_qdq(mod: tvm.IRModule, specs: Mapping[str, LayerSpec], ranges: Mapping[str, tuple[float, float]]) -> tvm.IRModule:
    """Relax -> Relax: quantize/dequantize on each quantized layer's input and weight (simulated)."""
    func = mod["main"]
    block = main_block(mod, "insert_qdq")
    layers = {call: name for name, call in quantizable_layers(func)}
    missing = [n for n in layers.values() if specs.get(n, LayerSpec()).quantize and n not in ranges]
    if missing:
        raise PassError(f"insert_qdq: no calibrated range for layer(s) {missing}")
    builder = relax.BlockBuilder()
    with builder.function("main", func.params, attrs=function_attrs(func)):
        with builder.dataflow():
            for binding in block.bindings:
                name = layers.get(binding.value)
                spec = specs.get(name) if name else None
                if spec is not None and spec.quantize:
                    new_call = _quantized_call(builder, binding.value, spec, ranges[name])
                    binding = relax.VarBinding(binding.var, builder.normalize(new_call))
                builder.emit_normalized(binding)
            output = func.body.body
        builder.emit_func_output(output)
    return with_main(mod, builder)


def _quantized_call(builder: relax.BlockBuilder, call: relax.Call, spec: LayerSpec,
                    value_range: tuple[float, float]) -> relax.Call:
    act = ActivationParams.from_range(*value_range, spec.activation_bits, spec.symmetric_activations)
    scale, zero = relax.const(np.float32(act.scale)), relax.const(np.int8(0) if act.dtype == "int8" else np.uint8(act.zero_point))
    q = builder.emit(relax.op.quantize(call.args[0], scale, zero, axis=1, out_dtype=act.dtype))
    if act.qmax < np.iinfo(act.dtype).max:  # narrower than the container (4-bit)
        q = builder.emit(relax.op.clip(q, act.qmin, act.qmax))
    x = builder.emit(relax.op.dequantize(q, scale, zero, axis=1, out_dtype="float32"))
    weight = call.args[1].value.numpy()
    axis = weight_axis(call)
    values, w_scale = quantize_weight(weight, spec.weight_bits, axis)
    shape = [1] * weight.ndim
    shape[axis] = -1
    simulated = (values.astype(np.float32) * w_scale.reshape(shape)).astype(weight.dtype)
    return relax.Call(call.op, [x, relax.const(simulated)] + list(call.args[2:]), call.attrs)
