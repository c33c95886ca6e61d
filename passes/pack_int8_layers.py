"""pack_int8_layers: give each uint8 x int8 layer a kernel with a layout made for integer dot products.

Requires: the integer module of ``lower_integer``: ``relax.matmul(data: uint8[..., K], W: int8 const [K, N],
out_dtype="int32")`` and ``relax.nn.conv2d(data: uint8 NCHW, W: int8 const OIHW, out_dtype="int32")`` with
batch 1 (groups 1, or one filter per channel). Run before ``legalize_ops``.
Guarantees: each such layer becomes one kernel of ``packed_layouts.INT8`` with the same int32 result, bit for
bit: matmuls (K % 4 == 0) and convolutions reduce in groups of four (the shape of ``vpdpbusd`` and of the
``backends.x86_packed`` schedules) over weights packed here; depthwise convolutions get their padding as a stage
of their own. Everything else (int8 activations, other grouped convolutions, a K that is not a multiple of 4)
is left as it is.
Numerics: exact. Padding the reduction with zero weights adds 0; padding with real zeros matches
``conv2d``'s own padding only when the activation zero point is 0, which ``lower_integer`` guarantees (it pads
explicitly with the zero point otherwise, leaving conv2d's padding 0).
"""

from __future__ import annotations

import tvm
from tvm import relax

from .packed_layouts import INT8, constant_weight_types, pack_layers
from .registry import register_pass


def _integer_layer(call: relax.Call) -> bool:
    """uint8 activations x a constant int8 weight, accumulated in int32."""
    return constant_weight_types(call) == ("uint8", "int8", "int32")


@register_pass("pack_int8_layers")
def pack_int8_layers(mod: tvm.IRModule) -> tvm.IRModule:
    """Relax -> Relax: uint8 x int8 matmul / conv2d layers become kernels over weights packed in groups of 4."""
    return pack_layers(mod, INT8, _integer_layer)
