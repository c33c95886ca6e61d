"""pack_float_layers: give each float32 convolution and constant-weight matmul a kernel made for FMA tiles.

Requires: ``relax.matmul(data: float32[..., K], W: float32 const [K, N])`` and ``relax.nn.conv2d(data: float32
NCHW, W: float32 const OIHW)`` with batch 1 (groups 1, or one filter per channel), float32 results. Run before
``legalize_ops``.
Guarantees: each such layer becomes one kernel of ``packed_layouts.FP32`` (im2col + a GEMM with 16 output
pixels in the lanes, or 16 output channels where the pixels would leave lanes empty: ``channel_lanes``; a
matmul over a weight packed 16 columns at a time, a depthwise convolution with its padding as a stage of
its own, the graph's constant pad before it taken in; a pointwise convolution's im2col never materialised:
``backends.x86_packed.is_pointwise_float``), scheduled by ``backends.x86_packed`` as register tiles of FMAs. Other layers
(float16, other grouped convolutions, a weight computed at run time) are left as they are.
Each kernel of a model with no integer layer is named after its layer as the quantization plan numbers them
(``quant_plan.quantizable_layers``: ``conv2d_3_f32``), so ``compiler.profile`` and the cost model key float
kernels to layers by name, as they do integer ones.
Numerics: the products and their order of summation over the reduction (c, i, j) are those of ``conv2d`` /
``matmul``, except that the backend may sum a depthwise convolution's taps filter column by filter column
(j, i: ``backends.x86_packed.schedule_depthwise``) and contract each multiply-add into an FMA (one rounding
instead of two), so results differ from the unpacked kernels in the last bits.
"""

from __future__ import annotations

import tvm
from tvm import relax

from .packed_layouts import FP32, channel_lanes, constant_weight_types, pack_layers
from .quant_plan import quantizable_bindings
from .registry import register_pass


def _float_layer(call: relax.Call) -> bool:
    """float32 activations x a constant float32 weight, a float32 result."""
    return constant_weight_types(call) == ("float32", "float32", "float32")


@register_pass("pack_float_layers")
def pack_float_layers(mod: tvm.IRModule) -> tvm.IRModule:
    """Relax -> Relax: float32 matmul / conv2d layers with constant weights become kernels for FMA register tiles."""
    return pack_layers(mod, FP32, _float_layer, by_channels=channel_lanes, layer_names=_plan_names(mod))


def _plan_names(mod: tvm.IRModule) -> dict[relax.Var, str]:
    """Bound variable -> plan layer name (``conv2d_3``) in a module whose one Relax function holds only float
    layers; empty otherwise (a quantized model's kernels carry the names ``lower_integer`` gave them, and the
    plan's numbering of a mixed module is not this one's)."""
    functions = [f for f in mod.functions.values() if isinstance(f, relax.Function)]
    if len(functions) != 1 or len(functions[0].body.blocks) != 1:
        return {}
    layers = quantizable_bindings(functions[0])
    if not all(_float_layer(binding.value) for _, binding in layers):
        return {}
    return {binding.var: name for name, binding in layers}
