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
Numerics: the products and their order of summation over the reduction (c, i, j) are those of ``conv2d`` /
``matmul``, except that the backend may sum a depthwise convolution's taps filter column by filter column
(j, i: ``backends.x86_packed.schedule_depthwise``) and contract each multiply-add into an FMA (one rounding
instead of two), so results differ from the unpacked kernels in the last bits.
"""

from __future__ import annotations

import tvm
from tvm import relax

from .packed_layouts import FP32, channel_lanes, constant_weight_types, pack_layers
from .registry import register_pass


def _float_layer(call: relax.Call) -> bool:
    """float32 activations x a constant float32 weight, a float32 result."""
    return constant_weight_types(call) == ("float32", "float32", "float32")


@register_pass("pack_float_layers")
def pack_float_layers(mod: tvm.IRModule) -> tvm.IRModule:
    """Relax -> Relax: float32 matmul / conv2d layers with constant weights become kernels for FMA register tiles."""
    return pack_layers(mod, FP32, _float_layer, by_channels=channel_lanes)
