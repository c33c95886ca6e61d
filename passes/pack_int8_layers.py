"""pack_int8_layers: give each uint8 x int8 layer a kernel with a layout made for integer dot products.

Requires: the integer module of ``lower_integer``: ``relax.matmul(data: uint8[..., K], W: int8 const [K, N],
out_dtype="int32")`` and ``relax.nn.conv2d(data: uint8 NCHW, W: int8 const OIHW, out_dtype="int32")`` with
batch 1 (groups 1, or one filter per channel). Run before ``legalize_ops``.
Guarantees: each such layer becomes one kernel of ``packed_layouts.INT8`` with the same int32 result, bit for
bit: matmuls (K % 4 == 0) and convolutions reduce in groups of four (the shape of ``vpdpbusd`` and of the
``backends.x86_packed`` schedules) over weights packed here; a convolution whose output pixels would leave
vector lanes empty and whose weight stays 8-bit puts its output channels in the lanes
(``packed_layouts.channel_lanes``). Under an x86 target with AVX2 but without
AVX-512 VNNI the kernels are ``packed_layouts.WIDE`` instead: groups of two over operands widened to int16
(``vpmaddwd``; matmuls need K % 2 == 0). A weight holding 4-bit values is stored two groups per byte
(``passes.int4``). When the pass runs under a target
(``with target:``) whose CPU has AMX-INT8, a convolution with at least ``AMX_MIN_REDUCTION`` reduction
elements and a multiple of 16 output channels has its reduction padded to a multiple of 64 (one AMX tile
row, ``backends.x86_amx``); depthwise convolutions get their padding as a stage
of their own, and, where the target has AVX-512 VNNI and VBMI (``vpdpbusd``, ``vpermb``) and the layer no
dilation, the layout of four filter taps per lane (``packed_layouts.depthwise_conv2d_taps``, which takes in
a zero-point pad before it); there a uint8 max pooling of 3-wide windows at column stride 2 becomes
``packed_layouts.max_pool2d_rows``. Two more matmuls get kernels of their own:
a uint8 x int16 constant weight that is a group-wise 4-bit one (``insert_qdq``'s m x Q, found by
``packed_layouts.factor_groups``) gets ``matmul_grouped`` (INT8 packing only), and a matmul of two centred
uint8 activations (``lower_integer``'s ``(astype(a, int32) - za) @ (astype(b, int32) - zb)`` with an int32
result, the second possibly through a ``permute_dims``) gets ``matmul_activations``. Everything else (int8
activations, other grouped convolutions, a K that is not a multiple of 4) is left as it is.
Numerics: exact. Padding the reduction with zero weights adds 0; padding with real zeros matches
``conv2d``'s own padding only when the activation zero point is 0, which ``lower_integer`` guarantees (it pads
explicitly with the zero point otherwise, leaving conv2d's padding 0). A 4-bit weight's kernel accumulates
16 w and shifts its sums back by 4, exact while 16 x the worst-case sum fits int32 (``int4.packs_as_nibbles``;
a weight that might not keeps 8-bit storage). WIDE products and pair sums fit int32 (2 x 255 x 128). A
grouped kernel's group sums (16 x G x 255 x 8) and totals (the layer's own bound, checked by
``lower_integer``) fit int32; an activation matmul's sum of a (b - 128) is at most K x 255 x 128, and its
zero-point terms are the exact algebra of (a - za)(b - zb).
"""

from __future__ import annotations

import tvm
from tvm import relax

from .int4 import packs_as_nibbles
from .packed_layouts import (INT8, TAPS_FEATURES, WIDE, ConvGeometry, Packing, channel_lanes, constant_weight_types,
                             pack_layers)
from .registry import register_pass


def _integer_layer(call: relax.Call) -> bool:
    """uint8 activations x a constant int8 weight, accumulated in int32."""
    return constant_weight_types(call) == ("uint8", "int8", "int32")


AMX_TILE_REDUCTION = 64  # reduction elements in one row of an AMX tile (64 bytes)
AMX_MIN_REDUCTION = 128
"""Smaller reductions stay on the vector schedule. ``benchmarks/int8_kernels.py`` against ``--reduce-multiple
64`` on the 2-core Sapphire Rapids guest: EfficientNet-Lite0's 1x1 16 -> 96 at 112x112 (reduction 16 -> 64)
107 us on ``vpdpbusd`` vs 248 us on tiles; ResNet-18's 3x3 64 -> 64 at 56x56 (576) 178 vs 145 us. Its 7x7/2
stem (147 -> 192) is the close call: 316 vs 387 us alone, but 0.41-0.42 vs 0.39-0.40 ms in the model with its
requantize (``qc profile``, three interleaved runs each), so it stays on tiles."""


def _has(target: tvm.target.Target | None, *features: str) -> bool:
    """Whether ``target`` is an LLVM CPU target with every one of ``features``."""
    from tvm.target.codegen import target_has_features

    return (target is not None and target.kind.name == "llvm"
            and all(bool(target_has_features(f, target)) for f in features))


def packing_for(target: tvm.target.Target | None) -> Packing:
    """``WIDE`` (operands widened to int16 for ``vpmaddwd``) where ``target`` is an x86 CPU with AVX2 but not
    AVX-512 VNNI, else ``INT8`` (four uint8 x int8 products per lane: ``vpdpbusd``, AMX, or LLVM's own code
    where the target is unknown or has neither)."""
    if _has(target, "avx2") and not _has(target, "avx512vnni", "avx512bw"):
        return WIDE
    return INT8


def _tile_friendly(target: tvm.target.Target | None):
    """The conv reduction multiple for ``target``: 64 where AMX tiles will run the layer, else the group."""
    amx, group = _has(target, "amx-int8", "amx-tile"), packing_for(target).group

    def multiple(geometry: ConvGeometry, out_channels: int) -> int:
        reduction = geometry.channels * geometry.kernel[0] * geometry.kernel[1]
        if amx and reduction >= AMX_MIN_REDUCTION and out_channels % 16 == 0:
            return AMX_TILE_REDUCTION
        return group

    return multiple


IMPLICIT_MIN_CHANNELS = 16
"""Fewer input channels keep im2col: an image of four channels a group pads a 3-channel stem to four (ResNet-18's
7x7/2 stem 406 -> 518 us alone, ``passes.packed_layouts.conv2d_implicit`` against ``conv2d_im2col``)."""


def _reads_windows(geometry: ConvGeometry, out_channels: int) -> bool:
    """A convolution with a window wider than 1x1 and at least ``IMPLICIT_MIN_CHANNELS`` input channels: the
    implicit layout's, whose interleaved image replaces the padded copy and the im2col. ResNet-18's kernels
    alone, with their requantize (2026-12-07, znver4): its 3x3 convs 0.83-0.96x of the im2col kernel's time
    except the two 56x56 ones with a residual add (1.04x), 4.85 -> 4.49 ms in all; its 1x1/2 downsamples
    1.04-1.36x, so pointwise windows keep im2col."""
    return geometry.kernel != (1, 1) and geometry.channels >= IMPLICIT_MIN_CHANNELS


@register_pass("pack_int8_layers")
def pack_int8_layers(mod: tvm.IRModule) -> tvm.IRModule:
    """Relax -> Relax: uint8 x int8 matmul / conv2d layers become kernels over weights packed in groups of 4
    (a conv's reduction padded to 64 for AMX tiles when the current target has them), a 4-bit weight two
    groups per byte."""
    target = tvm.target.Target.current(allow_none=True)
    packing = packing_for(target)
    taps = packing is INT8 and _has(target, *TAPS_FEATURES)
    implicit = _reads_windows if packing is INT8 and _has(target, "avx512vnni", "avx512bw") else None
    return pack_layers(mod, packing, _integer_layer, _tile_friendly(target), nibbles=packs_as_nibbles,
                       by_channels=channel_lanes if packing is INT8 else None,
                       taps=taps, implicit=implicit, grouped=packing is INT8, activations=packing is INT8)
