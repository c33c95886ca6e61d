"""Packed kernel layouts shared by ``pack_int8_layers`` and ``pack_float_layers`` (a library, not a pass).

A ``Packing`` names one family of kernels: its block names (``qc_int8_conv``, ``qc_fp32_conv``, ...), the
reduction elements one vector step consumes (``group``: 4 for ``vpdpbusd``, 1 for an FMA) and the accumulator
type. Every family computes the same layouts, with 16 output elements in the vector lanes:

- matmul: ``acc[m, n] = sum_k data[m, k] * P[n // 16, k // g, n % 16, k % g]`` with P the weight packed once
  at compile time ([N/16, K/g, 16, g], one contiguous vector per step; N padded to 16 with zero columns,
  which the result drops);
- conv2d (groups 1, batch 1, NCHW): ``col[r // g, p, r % g] = data[c, y*sy + i*dy - top, x*sx + j*dx - left]``
  (0 outside the image and past the ends; r = (c*KH + i)*KW + j, p = y*OW + x, padded to a multiple of g and
  16; gathered from the image laid out flat with its padding, through an int32 table of each r's offset), then
  ``acc[o, p] = sum_r col[r // g, p, r % g] * W'[o, r]`` with W' the flattened, zero-padded weight, then
  ``out[0, o, y, x] = acc[o, y*OW + x]``: output pixels in the lanes. Where that would leave lanes empty
  (``channel_lanes``: a 7x7 output is 49 pixels in 64 lanes, 14x14 196 in 208), the output channels go in
  the lanes instead, as in the matmul: ``acc[p, o] = sum_r col[r // g, p, r % g] * P[o // 16, r // g, o % 16,
  r % g]`` with P the flattened weight packed like a matmul's (``pack_matmul_weight(W'.T)``), pixels
  unpadded, and ``out[0, o, y, x] = acc[y*OW + x, o]``;
- implicit conv2d (``conv2d_implicit``, groups 1, batch 1, NCHW): no im2col. The input is laid out once,
  padded, with four channels interleaved, ``image[c // 4, y, x, c % 4]`` (zero past the channels and in the
  padding), and ``acc[p, o] = sum_r image[r // 4 // KK, y*sy + i*dy, x*sx + j*dx, r % 4] * P[o // 16, r // 4,
  o % 16, r % 4]`` with p = y*OW + x, (i, j) tap r // 4 % KK of the KH x KW window and P the weight
  reordered channel group by tap (``flatten_conv_weight_by_taps``) and packed like a matmul's: each step
  broadcasts the four bytes of one pixel and one tap against 16 output channels, so any pixel, any stride;
  ``out[0, o, y, x] = acc[y*OW + x, o]``;
- depthwise conv2d: the plain arithmetic with the padding made a stage of its own (a constant pad the graph
  put before the layer, an ONNX "SAME" pad or ``lower_integer``'s zero-point pad, taken in with its fill), so
  the backend can vectorize along output columns (no packing: each output reads one filter); a row narrower
  than a vector is computed a vector wide and cropped (``crop``).

An int8 weight holding 4-bit values (``passes.int4``) keeps these layouts with two groups per byte (matmul),
two channel groups of one tap per byte (implicit conv, an even count of groups: ``pack_implicit_nibbles``)
or two blocks of a row per byte run (im2col conv); an ``unpack`` block turns it back into the int8 operand as 16 w
and the kernel's last stage (``columns`` / ``nchw``) shifts the sums back by 4, so the result is the same
int32 bit for bit. The kernels are then named ``..._u8i4``.

The backends (``backends.x86_packed``) find the blocks by these names. Numerics: padding the reduction with
zero weights adds 0; the conv's zero padding is that of ``conv2d`` (for integer layers ``lower_integer``
guarantees an activation zero point of 0 there).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import partial
from typing import Callable

import numpy as np
import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

from .dataflow import op_name, rewrite_functions, widened_int32
from .int4 import (NIBBLE_SUFFIX, SHIFT, conv_nibble, conv_nibble_block, nibble16, pack_conv_nibbles,
                   pack_implicit_nibbles, pack_matmul_nibbles)

LANES = 16
IMAGE_SHAPE = "qc.image_shape"  # on the flat padded image stage: (channels, padded height, padded width)
OUTPUT_WIDTH = "qc.output_width"  # on an im2col block: the output row length its pixel loop splits by
ROW_STRIDE = "qc.row_stride"  # on a depthwise block: its vertical stride
COLUMN_STRIDE = "qc.column_stride"  # on a depthwise block of four taps per lane: its horizontal stride
INPUT_PITCH = "qc.input_pitch"  # on a depthwise block of four taps per lane: the row pitch of what it reads
TAPS_MAX_STRIDE = 4  # four taps per lane: the bytes of 16 lanes, 15 * stride + 4, within one 64-byte window
TAPS_FEATURES = ("avx512vnni", "avx512vbmi", "avx512bw")  # what the taps layouts run on: vpdpbusd, vpermb,
# masked byte loads (pack_int8_layers chooses them, backends.x86_depthwise runs them)
NIBBLES = "qc.nibbles"  # on an unpack block: 1 where it unpacks a 4-bit weight (two groups per byte)
OPS = "qc.ops"  # on a packed block: its useful operations, 2 x MACs of the real outputs (no padding lanes)
KERNEL_ATTRIBUTE = "qc.packed_layout"  # on a packed kernel: what it computes (op, weight shape, geometry)
LAYER_ATTRIBUTE = "qc.layer"  # on a packed kernel of a named layer: the layer's name
LAYER_NAME = re.compile(r"(conv2d|matmul)_\d+")  # a layer of the quantization plan, as lower_integer names it
CHANNEL_LANES = "qc.channel_lanes"  # on a conv block: 1 where the output channels are in the lanes
IMPLICIT = "qc.implicit"  # on a conv block: 1 where it reads the interleaved padded image (no im2col)
OUT_ELEMWISE_FUSABLE = 4  # relax's OpPatternKind: fusion may append the elementwise epilogue (the gathers
# through an offset table would otherwise make annotate_op_pattern call the kernel opaque)


@dataclass(frozen=True)
class Packing:
    """One family of packed kernels: block names ``qc_{name}_{role}``, ``group`` reduction elements per
    vector step, ``accumulator`` dtype, the suffix of its kernels' names (``conv2d_3_u8i8``), and
    ``operand``, the dtype both operands are widened to before they multiply (None: as stored)."""

    name: str
    group: int
    accumulator: str
    suffix: str
    operand: str | None = None

    def block(self, role: str) -> str:
        """The block of one role: ``matmul``, ``conv``, ``im2col``, ``pad``, ``depthwise``, ``crop``."""
        return f"qc_{self.name}_{role}"


INT8 = Packing("int8", 4, "int32", "u8i8")  # uint8 x int8 -> int32, four products per lane per step
WIDE = Packing("int16", 2, "int32", "u8i8", "int16")
"""uint8 x int8 -> int32 on CPUs without AVX-512 VNNI: both operands widened to int16 once (the activations in
im2col or a ``widen`` stage; a conv weight at compile time, a matmul weight vector by vector in the register
tile, a 4-bit weight by its ``unpack`` stage), two
products per lane per step: the shape of ``vpmaddwd``, exact (two products of at most 255 x 128 per lane)."""
FP32 = Packing("fp32", 1, "float32", "f32")  # float32 FMA, one product per lane per step


def pack_matmul_weight(weight: np.ndarray, group: int = INT8.group) -> np.ndarray:
    """[K, N] -> [N'/16, K/g, 16, g] with N' = N rounded up to 16 (zero columns):
    ``P[a, b, c, d] = W[g*b + d, 16a + c]``."""
    k, n = weight.shape
    padded = np.pad(weight, ((0, 0), (0, -n % LANES)))
    return np.ascontiguousarray(padded.T.reshape(-1, LANES, k // group, group).transpose(0, 2, 1, 3))


def flatten_conv_weight(weight: np.ndarray, group: int = INT8.group) -> np.ndarray:
    """OIHW -> [O, R'] with R' = C*KH*KW rounded up to a multiple of ``group`` (zeros past the end)."""
    out = weight.reshape(weight.shape[0], -1)
    return np.ascontiguousarray(np.pad(out, ((0, 0), (0, -out.shape[1] % group))))


def matmul_packed(data, packed, n_size, packing: Packing = INT8, nibbles: bool = False):
    """TE: ``data[..., K] @ W[K, n_size]`` with W packed by ``pack_matmul_weight``; accumulator-typed. With
    ``nibbles`` the weight is 4-bit, two groups per byte (``passes.int4.pack_matmul_nibbles``): an ``unpack``
    block makes the int8 operand (16 w) and the last stage shifts the sums back."""
    from tvm import te

    padded, g, acc_type, wide = int(packed.shape[0]) * LANES, packing.group, packing.accumulator, packing.operand
    k = te.reduce_axis((0, int(data.shape[-1])), "k")
    if nibbles or (wide and packed.dtype != wide):
        source = packed

        def weight(a, b, c, d):
            value = nibble16(source[a, b // 2, c, d], b % 2) if nibbles else source[a, b, c, d]
            return value.astype(wide) if wide else value

        packed = te.compute((int(packed.shape[0]), int(data.shape[-1]) // g, LANES, g), weight,
                            name=packing.block("unpack"), attrs={NIBBLES: int(nibbles)})
    if wide:
        narrow = data
        data = te.compute(data.shape, lambda *index: narrow[index].astype(wide), name=packing.block("widen"))

    def compute(*index):
        n = index[-1]
        return te.sum(data[tuple(index[:-1]) + (k,)].astype(acc_type)
                      * packed[n // LANES, k // g, n % LANES, k % g].astype(acc_type), axis=k)

    rows = int(np.prod([int(d) for d in data.shape[:-1]]))
    acc = te.compute(tuple(data.shape[:-1]) + (padded,), compute, name=packing.block("matmul"),
                     attrs={OPS: 2 * rows * n_size * int(data.shape[-1])})
    if padded == n_size and not nibbles:
        return acc
    return te.compute(tuple(data.shape[:-1]) + (n_size,), lambda *index: _unscaled(acc[index], nibbles),
                      name=packing.block("columns"))


def matmul_grouped(data, packed, multipliers, n_size, group: int, packing: Packing = INT8):
    """TE: ``data[..., K] @ W[K, n_size]`` for a group-wise 4-bit weight ``W[k, n] = m[k // group, n] *
    Q[k, n]``: Q packed by ``pack_matmul_weight`` and stored two groups per byte (``passes.int4``), m as
    ``multipliers[n // 16, j, n % 16]`` (uint8, 16 bytes per column block and group). Per group j the
    ``group_sum`` block sums ``data x 16 Q`` over the group's rows (the VNNI steps; 16 Q as unpacked), then
    the ``grouped`` block adds ``m * (that >> 4)`` over the groups: the exact int32 sum of data x W."""
    from tvm import te

    padded, g = int(packed.shape[0]) * LANES, packing.group
    reduce, rows_shape = int(data.shape[-1]), tuple(data.shape[:-1])
    unpacked = te.compute((int(packed.shape[0]), reduce // g, LANES, g),
                          lambda a, b, c, d: nibble16(packed[a, b // 2, c, d], b % 2),
                          name=packing.block("unpack"), attrs={NIBBLES: 1})
    within = te.reduce_axis((0, group), "kk")

    def group_sum(*index):
        *rows, j, n = index
        k = j * group + within
        return te.sum(data[tuple(rows) + (k,)].astype("int32")
                      * unpacked[n // LANES, k // g, n % LANES, k % g].astype("int32"), axis=within)

    sums = te.compute(rows_shape + (reduce // group, padded), group_sum, name=packing.block("group_sum"))
    across = te.reduce_axis((0, reduce // group), "j")
    count = int(np.prod([int(d) for d in rows_shape]))

    def grouped(*index):
        n = index[-1]
        return te.sum((sums[tuple(index[:-1]) + (across, n)] >> SHIFT)
                      * multipliers[n // LANES, across, n % LANES].astype("int32"), axis=across)

    acc = te.compute(rows_shape + (padded,), grouped, name=packing.block("grouped"),
                     attrs={OPS: 2 * count * n_size * reduce})
    if padded == n_size:
        return acc
    return te.compute(rows_shape + (n_size,), lambda *index: acc[index], name=packing.block("columns"))


def matmul_activations(a, b, a_zero: int, b_zero: int, axes: tuple[int, ...] | None = None,
                       packing: Packing = INT8):
    """TE: ``sum_k (a[..., m, k] - a_zero) * (B[..., k, n] - b_zero)`` in int32 for two uint8 activations (an
    attention's Q x K^T or probabilities x V), B = ``b`` or, with ``axes``, ``permute_dims(b, axes)`` read
    from ``b`` as it is stored (K^T from K: no transpose pass). ``vpdpbusd`` multiplies uint8 by int8, so B is
    packed per call as ``B - 128`` (its top bit flipped) in the matmul weight's layout (``pack``), and

        sum (a - za)(B - zb) = sum a (B - 128) + (128 - zb) sum_k a - za sum_k B + K za zb,

    the row sums of a and the column sums of B (``row_sum``, ``column_sum``) added in the last stage
    (``columns``). Exact: |sum a (B - 128)| <= K x 255 x 128."""
    from tvm import te, tirx

    lead, (rows, reduce) = tuple(a.shape[:-2]), (int(a.shape[-2]), int(a.shape[-1]))
    order = tuple(axes) if axes is not None else tuple(range(len(b.shape)))
    columns = int(b.shape[order[-1]])
    padded, g = -(-columns // LANES) * LANES, packing.group

    def element(index, k, n):
        view = tuple(index) + (k, n)  # B's index; b's axis order[d] is B's axis d
        stored = [None] * len(order)
        for axis, value in zip(order, view):
            stored[axis] = value
        return b[tuple(stored)]

    def pack(*index):
        *outer, block, step, lane, within = index
        n, k = block * LANES + lane, step * g + within
        flipped = tirx.bitwise_xor(element(outer, k, tirx.min(n, columns - 1)), tirx.const(0x80, "uint8"))
        return tirx.if_then_else(n < columns, flipped, tirx.const(0x80, "uint8")).astype("int8")

    packed = te.compute(lead + (padded // LANES, reduce // g, LANES, g), pack, name=packing.block("pack"))
    k_row, k_column, k = (te.reduce_axis((0, reduce), name) for name in ("kr", "kc", "k"))
    row_sum = te.compute(lead + (rows,), lambda *i: te.sum(a[tuple(i) + (k_row,)].astype("int32"), axis=k_row),
                         name=packing.block("row_sum"))
    column_sum = te.compute(lead + (columns,), lambda *i: te.sum(element(i[:-1], k_column, i[-1]).astype("int32"),
                                                                 axis=k_column), name=packing.block("column_sum"))

    def product(*index):
        *outer, m, n = index
        return te.sum(a[tuple(outer) + (m, k)].astype("int32")
                      * packed[tuple(outer) + (n // LANES, k // g, n % LANES, k % g)].astype("int32"), axis=k)

    count = int(np.prod([int(d) for d in lead + (rows,)]))
    acc = te.compute(lead + (rows, padded), product, name=packing.block("matmul"),
                     attrs={OPS: 2 * count * columns * reduce})
    constant = reduce * a_zero * b_zero
    return te.compute(lead + (rows, columns), lambda *i: acc[i] + (128 - b_zero) * row_sum[i[:-1]]
                      - a_zero * column_sum[i[:-2] + (i[-1],)] + constant, name=packing.block("columns"))


def factor_groups(weight: np.ndarray, sizes: tuple[int, ...] | None = None
                  ) -> tuple[int, np.ndarray, np.ndarray] | None:
    """(G, Q, m) with ``weight[k, n] == m[k // G, n] * Q[k, n]``, Q int8 in [-8, 7] and m int32 in [0, 255],
    for the largest G of ``sizes`` (default ``GROUP_SIZES``) that factors the int16 [K, N] ``weight`` (what
    ``insert_qdq`` makes of a group-wise 4-bit weight), else None. Any such factorization gives the kernel the
    same sums."""
    from .quant_policy import GROUP_SIZES

    values = weight.astype(np.int64)
    for size in sorted(sizes or GROUP_SIZES, reverse=True):
        if values.ndim != 2 or values.shape[0] % size:
            continue
        blocks = values.reshape(values.shape[0] // size, size, values.shape[1])
        common = np.gcd.reduce(np.abs(blocks), axis=1)  # [K/G, N]; m * gcd(Q) for the quantizer's own m
        multiplier = np.zeros_like(common)
        for divisor in range(8, 0, -1):  # the smallest multiplier that keeps Q within 4 bits
            candidate = common // divisor
            fits = (common % divisor == 0) & (candidate <= 255) & (candidate > 0)
            quotient = blocks // np.maximum(candidate, 1)[:, None, :]
            fits &= (quotient.min(axis=1) >= -8) & (quotient.max(axis=1) <= 7)
            multiplier = np.where((multiplier == 0) & fits, candidate, multiplier)
        if np.any((multiplier == 0) & (common != 0)):
            continue
        q = blocks // np.maximum(multiplier, 1)[:, None, :]
        if np.array_equal(q * multiplier[:, None, :], blocks):
            return size, q.reshape(values.shape).astype(np.int8), multiplier.astype(np.int32)
    return None


def pack_group_multipliers(multipliers: np.ndarray) -> np.ndarray:
    """m [K/G, N] -> [N'/16, K/G, 16] uint8 (N' = N rounded up to 16, zero columns): 16 bytes per column
    block and group."""
    groups, n = multipliers.shape
    padded = np.pad(multipliers, ((0, 0), (0, -n % LANES)))
    return np.ascontiguousarray(padded.T.reshape(-1, LANES, groups).transpose(0, 2, 1)).astype(np.uint8)


def _unscaled(value, nibbles: bool):
    """An accumulator as the layer's sum: shifted back from 16 w where the weight was unpacked from nibbles."""
    return value >> SHIFT if nibbles else value


@dataclass(frozen=True)
class ConvGeometry:
    """A conv2d's shapes (batch 1, groups 1) and the offset table that makes its im2col division-free."""

    channels: int
    height: int
    width: int
    kernel: tuple[int, int]
    strides: tuple[int, int]
    padding: tuple[int, int, int, int]  # top, left, bottom, right
    dilation: tuple[int, int]

    @property
    def padded(self) -> tuple[int, int]:
        top, left, bottom, right = self.padding
        return self.height + top + bottom, self.width + left + right

    @property
    def out(self) -> tuple[int, int]:
        (ph, pw), (kh, kw), (sy, sx), (dy, dx) = self.padded, self.kernel, self.strides, self.dilation
        return (ph - (kh - 1) * dy - 1) // sy + 1, (pw - (kw - 1) * dx - 1) // sx + 1

    @property
    def pointwise(self) -> bool:
        """A 1x1 convolution with stride 1 and no padding: im2col reads the image as it is, no copy first."""
        return self.kernel == (1, 1) and self.strides == (1, 1) and not any(self.padding)

    @property
    def padded_pixels(self) -> int:
        """Output pixels rounded up to a multiple of 16 (the lanes of a step)."""
        oh, ow = self.out
        return -(-oh * ow // LANES) * LANES

    @property
    def macs(self) -> int:
        """Multiply-adds per output channel."""
        oh, ow = self.out
        return oh * ow * self.channels * self.kernel[0] * self.kernel[1]

    def reduce_offsets(self, group: int = INT8.group) -> np.ndarray:
        """int32 [R rounded up to ``group``]: where reduction element r = (c*KH + i)*KW + j sits in a window."""
        (ph, pw), (kh, kw), (dy, dx) = self.padded, self.kernel, self.dilation
        c, i, j = np.meshgrid(np.arange(self.channels), np.arange(kh), np.arange(kw), indexing="ij")
        offsets = (c * ph * pw + i * dy * pw + j * dx).ravel()
        return np.pad(offsets, (0, -offsets.size % group)).astype(np.int32)


CHANNEL_LANES_MIN_REDUCTION = 64
"""The smallest reduction for which a convolution with padded pixel vectors puts its output channels in the
lanes (``channel_lanes``). Measured per layer on this 2-core ``znver4`` (2026-12-07), channels / pixels time.
Both layouts built alone and timed in alternation (``vpdpbusd``): 3x3 512 at 7x7 (reduction 4608) 0.83,
3x3/2 256 -> 512 to 7x7 0.80, 1x1 1152 -> 320 at 7x7 0.85, 1x1 320 -> 1280 at 7x7 0.89, 3x3 256 at 14x14
0.86-0.90, 3x3/2 128 -> 256 to 14x14 0.87, 1x1 672 -> 112 at 14x14 1.01, 1x1 112 -> 672 at 14x14 1.06 and
80 -> 480 1.23. In the model, whose kernels index in int64 and fuse the requantize, the pixel layout's
partial last vector (196 = 12 x 16 + 4) costs more: EfficientNet-Lite0's 1x1 112 -> 672 at 14x14 0.126 ->
0.067 ms and 80 -> 480 0.083 -> 0.042 ms in the channel layout (``qc profile``, one process each), the whole
model 3.54 -> 3.23 ms (alternating rounds in one process). 28x28 and 56x56 outputs fill their vectors (3x3
128 at 28x28 1.00, 3x3 64 at 56x56 1.18 alone) and keep the pixel layout."""

CHANNEL_TILE_ROWS = (4, 8)
"""The pixel rows of a channels-in-lanes register tile: a divisor of the output's pixels in this range (each
step's weight vectors are reused by every row; 1 or 2 rows would stream the weight once per pixel)."""


def channel_lanes(geometry: ConvGeometry, out_channels: int) -> bool:
    """Whether a convolution computes with its output channels in the vector lanes (see the module docstring):
    its pixels do not fill whole vectors, its reduction is at least ``CHANNEL_LANES_MIN_REDUCTION``, its
    channels are a multiple of 16 and its pixel count has a divisor in ``CHANNEL_TILE_ROWS``."""
    oh, ow = geometry.out
    pixels, reduction = oh * ow, geometry.channels * geometry.kernel[0] * geometry.kernel[1]
    low, high = CHANNEL_TILE_ROWS
    return (out_channels % LANES == 0 and geometry.padded_pixels > pixels and reduction >= CHANNEL_LANES_MIN_REDUCTION
            and any(pixels % r == 0 for r in range(low, high + 1)))


def pack_conv_weight_by_channels(flat: np.ndarray, group: int = INT8.group) -> np.ndarray:
    """A flattened conv weight [O, R'] packed with the output channels in the lanes: [O/16, R'/g, 16, g]."""
    return pack_matmul_weight(np.ascontiguousarray(flat.T), group)


def conv2d_im2col(data, flat, reduce_offsets, geometry: ConvGeometry, packing: Packing = INT8, nibbles: bool = False):
    """TE: NCHW conv2d (batch 1, groups 1) of ``data`` with the flattened weight, via im2col in groups of
    ``packing.group``; accumulator-typed NCHW result. With ``nibbles`` the weight is 4-bit
    (``passes.int4.pack_conv_nibbles``): an ``unpack`` block makes the int8 weight (16 w) and the last
    stage shifts the sums back. The image is first laid out flat with its zero padding
    (the ``pad`` block), so gathering a column is a table lookup (hoisted out of the pixel loops) and an add;
    the pixel's row and column (``p // OW``, ``p % OW``) become loop variables once the schedule splits ``p``
    by OW. A pointwise convolution (1x1, stride 1, unpadded) gathers from the image directly. A weight packed
    by ``pack_conv_weight_by_channels`` (4-d) puts the output channels in the lanes (``acc[p, o]``)."""
    from tvm import te, tirx

    g, group, acc_type = geometry, packing.group, packing.accumulator
    (ph, pw), (oh, ow) = g.padded, g.out
    top, left = g.padding[:2]
    reduce, pixels = g.channels * g.kernel[0] * g.kernel[1], oh * ow
    zero = tirx.const(0, data.dtype)
    by_channels = len(flat.shape) == 4  # packed by ``pack_conv_weight_by_channels``: channels in the lanes
    if by_channels and packing.operand:
        raise ValueError("a conv weight packed by channels is multiplied as stored (no widened operand)")

    def pad(f):
        c, y, x = f // (ph * pw), f % (ph * pw) // pw - top, f % pw - left
        inside = tirx.all(y >= 0, y < g.height, x >= 0, x < g.width)
        return tirx.if_then_else(inside, data[0, c, y, x], zero)

    if g.pointwise:  # the image is its own im2col: column r of pixel p is data[r, p // OW, p % OW]
        def gather(rg, p, t):
            r = rg * group + t
            return tirx.if_then_else(tirx.all(r < reduce, p < pixels), data[0, r, p // ow, p % ow], zero)
    else:
        image = te.compute((g.channels * ph * pw,), pad, name=packing.block("pad"),
                           attrs={IMAGE_SHAPE: [g.channels, ph, pw]})

        def gather(rg, p, t):
            r = rg * group + t
            start = p // ow * (g.strides[0] * pw) + p % ow * g.strides[1]
            return tirx.if_then_else(tirx.all(r < reduce, p < pixels), image[start + reduce_offsets[r]], zero)

    wide = packing.operand
    if by_channels and nibbles:  # as the matmul's: two groups per byte, unpacked to 16 w in the tile
        source = flat
        flat = te.compute((int(source.shape[0]), int(source.shape[1]) * 2, LANES, group),
                          lambda a, b, c, d: nibble16(source[a, b // 2, c, d], b % 2), name=packing.block("unpack"),
                          attrs={NIBBLES: 1})
    elif nibbles or (wide and flat.dtype != wide):
        source, reduce = flat, int(reduce_offsets.shape[0])

        def weight(o, r):
            value = conv_nibble(source, o, r, reduce) if nibbles else source[o, r]
            return value.astype(wide) if wide else value

        flat = te.compute((int(flat.shape[0]), reduce), weight, name=packing.block("unpack"),
                          attrs={NIBBLES: int(nibbles)})
    if by_channels:
        groups, out_channels, padded_pixels = int(flat.shape[1]), int(flat.shape[0]) * LANES, pixels
    else:
        groups, out_channels, padded_pixels = int(flat.shape[1]) // group, int(flat.shape[0]), g.padded_pixels
    column = (lambda rg, p, t: gather(rg, p, t).astype(wide)) if wide else gather
    col = te.compute((groups, padded_pixels, group), column, name=packing.block("im2col"), attrs={OUTPUT_WIDTH: ow})
    r = te.reduce_axis((0, groups * group), "r")
    attrs = {OPS: 2 * out_channels * g.macs, CHANNEL_LANES: int(by_channels)}
    if by_channels:
        acc = te.compute((pixels, out_channels), lambda p, o: te.sum(
            col[r // group, p, r % group].astype(acc_type)
            * flat[o // LANES, r // group, o % LANES, r % group].astype(acc_type), axis=r),
            name=packing.block("conv"), attrs=attrs)
        return te.compute((1, out_channels, oh, ow), lambda b, o, y, x: _unscaled(acc[y * ow + x, o], nibbles),
                          name=packing.block("nchw"))
    acc = te.compute((out_channels, padded_pixels),
                     lambda o, p: te.sum(col[r // group, p, r % group].astype(acc_type) * flat[o, r].astype(acc_type),
                                         axis=r), name=packing.block("conv"), attrs=attrs)
    return te.compute((1, out_channels, oh, ow), lambda b, o, y, x: _unscaled(acc[o, y * ow + x], nibbles),
                      name=packing.block("nchw"))


def flatten_conv_weight_by_taps(weight: np.ndarray, group: int = INT8.group) -> np.ndarray:
    """OIHW -> [O, ceil(C / g) * KH * KW * g], the reduction of ``conv2d_implicit``: channel group, tap, then
    the g channels of the group (zero past C): ``W'[o, ((c // g) * KH * KW + i * KW + j) * g + c % g] =
    W[o, c, i, j]``."""
    out, channels, kh, kw = weight.shape
    padded = np.pad(weight, ((0, 0), (0, -channels % group), (0, 0), (0, 0)))
    return np.ascontiguousarray(padded.reshape(out, -1, group, kh, kw).transpose(0, 1, 3, 4, 2).reshape(out, -1))


def conv2d_implicit(data, packed, geometry: ConvGeometry, packing: Packing = INT8, nibbles: bool = False):
    """TE: NCHW conv2d (batch 1, groups 1) without im2col (see the module docstring): an ``image`` block
    lays the input out padded with ``packing.group`` channels interleaved, then the conv block reads each
    step's four bytes from it at the pixel's tap; the weight is ``flatten_conv_weight_by_taps`` packed by
    ``pack_conv_weight_by_channels`` (output channels in the lanes). With ``nibbles`` it is 4-bit
    (``passes.int4.pack_implicit_nibbles``: two channel groups of one tap per byte, an even count of groups),
    the reduction's channel groups become (pair, group of the pair), an ``unpack`` block
    ([O/16, C/2g, taps, 2, 16, g], 16 w) makes the int8 operands and the last stage shifts the sums back.
    Accumulator-typed NCHW result."""
    from tvm import te, tirx

    g, group, acc_type = geometry, packing.group, packing.accumulator
    if packing.operand:
        raise ValueError(f"conv2d_implicit multiplies the operands as stored; {packing.name} widens them")
    (ph, pw), (oh, ow), (kh, kw), (sy, sx), (dy, dx) = g.padded, g.out, g.kernel, g.strides, g.dilation
    top, left = g.padding[:2]
    taps, zero = kh * kw, tirx.const(0, data.dtype)

    def interleaved(c4, y, x, t):
        c, row, column = c4 * group + t, y - top, x - left
        inside = tirx.all(c < g.channels, row >= 0, row < g.height, column >= 0, column < g.width)
        return tirx.if_then_else(inside, data[0, c, row, column], zero)

    image = te.compute((-(-g.channels // group), ph, pw, group), interleaved, name=packing.block("image"),
                       attrs={IMAGE_SHAPE: [g.channels, ph, pw]})
    blocks, steps = int(packed.shape[0]), int(packed.shape[1])
    out_channels = blocks * LANES
    # the reduction as (channel group, filter row, filter column, channel in the group): affine indices;
    # 4-bit: the channel group as (pair, which of the pair), that inside the taps (one load, both groups)
    rc, ri, rj, rt = (te.reduce_axis((0, n), name) for n, name in
                      ((steps // taps, "rc"), (kh, "ri"), (kw, "rj"), (group, "rt")))
    if nibbles:
        weight = te.compute((blocks, steps // taps, taps, 2, LANES, group),
                            lambda b, m, t, p, lane, i: nibble16(packed[b, m * taps + t, lane, i], p),
                            name=packing.block("unpack"), attrs={NIBBLES: 1})
        rp = te.reduce_axis((0, 2), "rp")
        axes, channel_group = [rc, ri, rj, rp, rt], rc * 2 + rp
        tap = lambda o: weight[o // LANES, rc, ri * kw + rj, rp, o % LANES, rt]  # noqa: E731
    else:
        axes, channel_group = [rc, ri, rj, rt], rc
        tap = lambda o: packed[o // LANES, (rc * kh + ri) * kw + rj, o % LANES, rt]  # noqa: E731

    def accumulate(p, o):
        y, x = p // ow, p % ow
        return te.sum(image[channel_group, y * sy + ri * dy, x * sx + rj * dx, rt].astype(acc_type)
                      * tap(o).astype(acc_type), axis=axes)

    acc = te.compute((oh * ow, out_channels), accumulate, name=packing.block("conv"),
                     attrs={OPS: 2 * out_channels * g.macs, CHANNEL_LANES: 1, IMPLICIT: 1})
    return te.compute((1, out_channels, oh, ow), lambda b, o, y, x: _unscaled(acc[y * ow + x, o], nibbles),
                      name=packing.block("nchw"))


def depthwise_conv2d_taps(data, weight, strides, padding, packing: Packing = INT8, fill: int = 0):
    """TE: NCHW depthwise conv2d (batch 1, one filter per channel, no dilation) for a kernel that sums four
    filter taps per lane (``backends.x86_depthwise``: ``vpdpbusd`` on a window of the input row permuted by
    ``vpermb``): the plain arithmetic on the output's own shape (no lanes to round up to), its padding, where
    ``padding`` has any, a stage over exactly the rows and columns the taps read, filled with ``fill`` (0, or
    the zero point of a pad the packer took in). The block carries the input's row pitch (``INPUT_PITCH``),
    which the kernel's lane tables are built from."""
    from tvm import te

    channels, (kh, kw) = int(data.shape[1]), (int(d) for d in weight.shape[2:])
    (oh, ow), tap, pitch = _row_window_input(data, (kh, kw), strides, padding, fill, packing)
    i, j = te.reduce_axis((0, kh), "i"), te.reduce_axis((0, kw), "j")
    (sy, sx), acc = strides, packing.accumulator
    return te.compute(
        (1, channels, oh, ow),
        lambda b, c, y, x: te.sum(tap(c, y * sy + i, x * sx + j).astype(acc) * weight[c, 0, i, j].astype(acc),
                                  axis=[i, j]),
        name=packing.block("depthwise"),
        attrs={OPS: 2 * channels * oh * ow * kh * kw, ROW_STRIDE: sy, COLUMN_STRIDE: sx, INPUT_PITCH: pitch})


def _row_window_input(data, window, strides, padding, fill, packing: Packing):
    """((output rows, columns), tap(c, y, x), row pitch) of a window op over NCHW ``data``: with ``padding``,
    taps read a ``pad`` stage of exactly the rows and columns they need, filled with ``fill``; else the data."""
    from tvm import te, tirx

    _, channels, height, width = (int(d) for d in data.shape)
    (kh, kw), (sy, sx), (top, left, bottom, right) = window, strides, padding
    oh, ow = (height + top + bottom - kh) // sy + 1, (width + left + right - kw) // sx + 1
    if not any(padding):
        return (oh, ow), (lambda c, y, x: data[0, c, y, x]), width
    rows, cols, value = (oh - 1) * sy + kh, (ow - 1) * sx + kw, tirx.const(fill, data.dtype)

    def padded(c, y, x):
        inside = tirx.all(y >= top, y < top + height, x >= left, x < left + width)
        return tirx.if_then_else(inside, data[0, c, y - top, x - left], value)

    image = te.compute((channels, rows, cols), padded, name=packing.block("pad"))
    return (oh, ow), (lambda c, y, x: image[c, y, x]), cols


def max_pool2d_rows(data, pool, strides, padding, packing: Packing = INT8):
    """TE: NCHW uint8 max pooling (batch 1, no dilation) for a kernel that pools whole output rows at once
    (``backends.x86_depthwise``): the plain window maximum, its padding a stage filled with 0 (uint8's least
    value, so the maximum ignores it as pooling's padding means). The block carries the input's row pitch."""
    from tvm import te

    channels, (kh, kw), (sy, sx) = int(data.shape[1]), pool, strides
    (oh, ow), tap, pitch = _row_window_input(data, pool, strides, padding, 0, packing)
    i, j = te.reduce_axis((0, kh), "i"), te.reduce_axis((0, kw), "j")
    return te.compute((1, channels, oh, ow), lambda b, c, y, x: te.max(tap(c, y * sy + i, x * sx + j), axis=[i, j]),
                      name=packing.block("maxpool"),
                      attrs={OPS: channels * oh * ow * kh * kw, ROW_STRIDE: sy, COLUMN_STRIDE: sx, INPUT_PITCH: pitch})


def depthwise_conv2d(data, weight, strides, padding, dilation, packing: Packing = INT8, fill: float = 0):
    """TE: NCHW depthwise conv2d (batch 1, one filter per channel), padded with ``fill``; accumulator-typed
    NCHW result.
    A row narrower than a vector (``LANES``) is computed a whole vector wide (the extra columns accumulated,
    then dropped by a ``crop`` block), so every tap loads a whole vector instead of a 14- or 7-byte row
    assembled by inserts (three shuffles per tap, each on the one shuffle port; Lite0's 5x5 layers at 14x14
    0.18 -> 0.10 ms, at 7x7 0.12 -> 0.09-0.10, ``qc profile``). The zero
    padding, widened on the right as far as those columns read, is materialised first (a ``pad`` block), so
    the inner loop has no bounds tests and reads nothing past the input; with a horizontal stride s > 1 that
    stage also splits each padded row into s phases (``[c, y, phase, x']`` holds column ``x' * s + phase``),
    so every filter tap reads consecutive columns: output column x, tap j reads phase ``(j*dx) % s`` at
    ``x + (j*dx) // s``."""
    from tvm import te, tirx

    _, channels, height, width = (int(d) for d in data.shape)
    kh, kw = (int(d) for d in weight.shape[2:])
    (sy, sx), (dy, dx) = strides, dilation
    top, left, bottom, right = padding
    ph, pw = height + top + bottom, width + left + right
    oh, ow = (ph - (kh - 1) * dy - 1) // sy + 1, (pw - (kw - 1) * dx - 1) // sx + 1
    vector_ow = max(ow, LANES)  # wider rows keep their width: their guarded write-back cost more than
    # the partial vector saved (Lite0's 56-wide 3x3/2 layer 0.17 -> 0.48 ms when rounded up to 64)
    pw = max(pw, (vector_ow - 1) * sx + (kw - 1) * dx + 1)  # the columns the whole vectors read
    outside, acc_type = tirx.const(fill, data.dtype), packing.accumulator

    def padded(c, y, x):
        inside = tirx.all(y >= top, y < top + height, x >= left, x < left + width)
        return tirx.if_then_else(inside, data[0, c, y - top, x - left], outside)

    if sx > 1:
        phases = te.compute((channels, ph, sx, -(-pw // sx)), lambda c, y, p, x: padded(c, y, x * sx + p),
                            name=packing.block("pad"))
        tap = lambda c, y, x, j: phases[c, y, j * dx % sx, x + j * dx // sx]  # noqa: E731
    elif pw > width or ph > height:
        image = te.compute((channels, ph, pw), padded, name=packing.block("pad"))
        tap = lambda c, y, x, j: image[c, y, x + j * dx]  # noqa: E731
    else:
        tap = lambda c, y, x, j: data[0, c, y, x + j * dx]  # noqa: E731
    i, j = te.reduce_axis((0, kh), "i"), te.reduce_axis((0, kw), "j")
    acc = te.compute(
        (1, channels, oh, vector_ow),
        lambda b, c, y, x: te.sum(tap(c, y * sy + i * dy, x, j).astype(acc_type) * weight[c, 0, i, j].astype(acc_type),
                                  axis=[i, j]),
        name=packing.block("depthwise"), attrs={OPS: 2 * channels * oh * ow * kh * kw, ROW_STRIDE: sy})
    if vector_ow == ow:
        return acc
    return te.compute((1, channels, oh, ow), lambda b, c, y, x: acc[b, c, y, x], name=packing.block("crop"))


def matmul_kernel(m: int, k: int, n: int, packing: Packing = INT8, dtypes: tuple[str, str] = ("uint8", "int8"),
                  nibbles: bool = False):
    """A standalone ``[m, k] @ packed -> [m, n]`` PrimFunc (benchmarks and tests); with ``nibbles`` the weight
    is 4-bit (``passes.int4.pack_matmul_nibbles``)."""
    from tvm import te

    data = te.placeholder((m, k), dtypes[0], "data")
    groups = -(-k // (2 * packing.group)) if nibbles else k // packing.group
    packed = te.placeholder((-(-n // LANES), groups, LANES, packing.group), "uint8" if nibbles else dtypes[1], "packed")
    return te.create_prim_func([data, packed, matmul_packed(data, packed, n, packing, nibbles)])


def conv_kernel(geometry: ConvGeometry, out_channels: int, packing: Packing = INT8,
                dtypes: tuple[str, str] = ("uint8", "int8"), reduce_multiple: int | None = None,
                nibbles: bool = False, by_channels: bool = False):
    """A standalone conv2d PrimFunc taking (data, flattened weight, reduce offsets) -> NCHW, the reduction
    padded to ``reduce_multiple`` (default: the packing's group); with ``nibbles`` the weight is 4-bit
    (``passes.int4.pack_conv_nibbles``); with ``by_channels`` it is packed by ``pack_conv_weight_by_channels``
    (output channels in the lanes)."""
    from tvm import te

    g, multiple = geometry, reduce_multiple or packing.group
    data = te.placeholder((1, g.channels, g.height, g.width), dtypes[0], "data")
    reduce = -(-g.channels * g.kernel[0] * g.kernel[1] // multiple) * multiple
    width = -(-reduce // (2 * conv_nibble_block(reduce))) * conv_nibble_block(reduce) if nibbles else reduce
    shape = ((out_channels // LANES, reduce // packing.group // (2 if nibbles else 1), LANES, packing.group)
             if by_channels else (out_channels, width))
    flat = te.placeholder(shape, "uint8" if nibbles else packing.operand or dtypes[1], "flat")
    offsets = te.placeholder(g.reduce_offsets(multiple).shape, "int32", "reduce")
    return te.create_prim_func([data, flat, offsets, conv2d_im2col(data, flat, offsets, g, packing, nibbles)])


@mutator
class LayerPacker(PyExprMutator):
    """Rewrites each accepted matmul / conv2d / depthwise conv2d into a packed kernel of ``packing``.

    Each kernel is named after its binding when that is a layer name (``lower_integer`` names the
    accumulators ``conv2d_3`` / ``matmul_0``), e.g. ``conv2d_3_u8i8``; fusion keeps it in the fused kernel's
    name (``fused_conv2d_3_u8i8_add_...``), which is how ``compiler.profile`` finds a kernel's layer."""

    def __init__(self, mod, packing: Packing, accepts: Callable[[relax.Call], bool],
                 reduce_multiple: Callable[[ConvGeometry, int], int] | None = None,
                 nibbles: Callable[[np.ndarray, tuple[int, ...]], bool] | None = None,
                 by_channels: Callable[[ConvGeometry, int], bool] | None = None,
                 taps: bool = False, implicit: Callable[[ConvGeometry, int], bool] | None = None,
                 grouped: bool = False, activations: bool = False,
                 layer_names: dict[relax.Var, str] | None = None):
        super().__init__(mod)
        self.layer_names = layer_names or {}
        self.packing, self.accepts, self.binding = packing, accepts, ""
        self.reduce_multiple = reduce_multiple or (lambda geometry, out_channels: packing.group)
        self.nibbles = nibbles or (lambda weight, reduce_axes: False)
        self.by_channels = by_channels or (lambda geometry, out_channels: False)
        self.taps = taps
        self.implicit = implicit or (lambda geometry, out_channels: False)
        self.grouped = grouped
        self.activations = activations

    def visit_var_binding_(self, binding: relax.VarBinding) -> None:  # noqa: N802  (TVM's visitor naming)
        self.binding = self.layer_names.get(binding.var, binding.var.name)
        super().visit_var_binding_(binding)

    def _centred_uint8(self, value: relax.Expr, permuted: bool = False
                       ) -> tuple[relax.Expr, int, tuple[int, ...] | None] | None:
        """(x, z, axes) when ``value`` is ``astype(x, int32) - z`` (or without the ``- z``) of a uint8 tensor
        x, as ``lower_integer`` centres an activation matmul's operand; with ``permuted``, where x is
        ``permute_dims(y, axes)``, y and those axes (the kernel reads y in place), else x and None."""
        found = widened_int32(value, self.lookup_binding)
        if found is None:
            return None
        source, zero = found
        if not isinstance(source.ty, relax.TensorType) or str(source.ty.dtype) != "uint8" or not 0 <= zero <= 255:
            return None
        moved = self.lookup_binding(source) if permuted and isinstance(source, relax.Var) else None
        if moved is not None and op_name(moved) == "relax.permute_dims" and moved.attrs.axes is not None:
            return moved.args[0], zero, tuple(int(v) for v in moved.attrs.axes)
        return source, zero, None

    def _spatial_pad(self, data: relax.Expr):
        """(the padded tensor, [top, left, bottom, right], the fill) when ``data`` is bound to a constant pad of
        rows and columns only, else None."""
        bound = self.lookup_binding(data) if isinstance(data, relax.Var) else None
        if bound is None or op_name(bound) != "relax.nn.pad" or str(bound.attrs.pad_mode) != "constant":
            return None
        widths = [int(w) for w in bound.attrs.pad_width]
        fill = _constant_pad_value(float(bound.attrs.pad_value), str(bound.args[0].ty.dtype))
        if any(widths[:4]) or min(widths) < 0 or fill is None:
            return None
        top, bottom, left, right = widths[4:]
        return bound.args[0], [top, left, bottom, right], fill

    def _name(self, kind: str, nibbles: bool = False) -> str:
        suffix = NIBBLE_SUFFIX if nibbles else self.packing.suffix
        return f"{self.binding if LAYER_NAME.fullmatch(self.binding) else kind}_{suffix}"

    def _stored(self, weight: np.ndarray, nibbles: bool, pack_nibbles: Callable[[np.ndarray], np.ndarray],
                widened: bool = False):
        """A packed weight as the kernel keeps it: 4-bit two per byte; with ``widened`` (a convolution, whose
        weight is the broadcast operand) already in the packing's operand type (``WIDE``: int16, so the
        kernel does not widen it on every call); else as it is (a ``WIDE`` matmul widens each weight vector
        as it loads it: half the bytes to read)."""
        if nibbles:
            return pack_nibbles(weight)
        return weight.astype(self.packing.operand) if widened and self.packing.operand else weight

    def _attrs(self, info: dict | None = None) -> dict:
        """The kernel's attributes: its layout (``info``), fusion's pattern kind, and its layer's name, which
        also keeps two layers of the same shape from sharing one kernel (the builder merges equal kernels)."""
        attrs = {"op_pattern": OUT_ELEMWISE_FUSABLE}
        if info is not None:
            attrs[KERNEL_ATTRIBUTE] = info
        if LAYER_NAME.fullmatch(self.binding):
            attrs[LAYER_ATTRIBUTE] = self.binding
        return attrs

    def _implicit_conv(self, call: relax.Call, weight: np.ndarray, geometry: ConvGeometry, nibbles: bool):
        """The conv2d as ``conv2d_implicit``: output channels in the lanes, no im2col; a 4-bit weight two
        channel groups of a tap per byte (``passes.int4.pack_implicit_nibbles``)."""
        group, taps = self.packing.group, geometry.kernel[0] * geometry.kernel[1]
        packed = pack_conv_weight_by_channels(flatten_conv_weight_by_taps(weight, group), group)
        info = {"op": "conv2d", "weight_shape": list(weight.shape), "strides": list(geometry.strides),
                "padding": list(geometry.padding), "dilation": list(geometry.dilation),
                "weight_bits": 4 if nibbles else 8, "lanes": "channels", "im2col": False}
        stored = self._stored(packed, nibbles, partial(pack_implicit_nibbles, taps=taps))
        return self.builder_.call_te(partial(conv2d_implicit, geometry=geometry, packing=self.packing,
                                             nibbles=nibbles), call.args[0], relax.const(stored),
                                     primfunc_name_hint=self._name("conv2d", nibbles),
                                     primfunc_attrs=self._attrs(info))

    def visit_call_(self, call: relax.Call) -> relax.Expr:  # noqa: N802  (TVM's visitor naming)
        call = super().visit_call_(call)
        name, packing, group = op_name(call), self.packing, self.packing.group
        if name == "relax.nn.max_pool2d" and self.taps and _rows_poolable(call):
            attrs = call.attrs
            return self.builder_.call_te(partial(max_pool2d_rows, packing=packing), call.args[0],
                                         [int(v) for v in attrs.pool_size], [int(v) for v in attrs.strides],
                                         [int(v) for v in attrs.padding], primfunc_name_hint="max_pool2d_rows",
                                         primfunc_attrs=self._attrs())
        if name == "relax.matmul" and self.activations:
            # only the second operand is read through its permutation (the kernel packs it per call)
            operands = [self._centred_uint8(call.args[0]), self._centred_uint8(call.args[1], permuted=True)]
            if (all(operands) and str(call.ty.dtype) == "int32"
                    and _activation_shapes_fit(operands[0][0], operands[1][0], operands[1][2], group)):
                (a, a_zero, _), (b, b_zero, axes) = operands
                return self.builder_.call_te(partial(matmul_activations, a_zero=a_zero, b_zero=b_zero,
                                                     axes=axes, packing=packing), a, b,
                                             primfunc_name_hint="matmul_activations",
                                             primfunc_attrs=self._attrs({"op": "matmul", "operands": "activations"}))
        if name == "relax.matmul" and self.grouped and _grouped_matmul(call):
            factored = factor_groups(call.args[1].value.numpy())
            if factored is not None:
                size, q, multipliers = factored
                info = {"op": "matmul", "weight_shape": list(q.shape), "weight_bits": 4, "weight_group": size}
                return self.builder_.call_te(partial(matmul_grouped, group=size, packing=packing), call.args[0],
                                             relax.const(pack_matmul_nibbles(pack_matmul_weight(q, group))),
                                             relax.const(pack_group_multipliers(multipliers)), q.shape[1],
                                             primfunc_name_hint=self._name("matmul", True),
                                             primfunc_attrs=self._attrs(info))
        if name not in ("relax.matmul", "relax.nn.conv2d") or not self.accepts(call):
            return call
        if name == "relax.matmul" and _packable_matmul(call, group):
            weight = call.args[1].value.numpy()
            packed = pack_matmul_weight(weight, group)
            nibbles = packed.shape[1] % 2 == 0 and self.nibbles(weight, (0,))  # an even count of groups to pair
            info = {"op": "matmul", "weight_shape": list(weight.shape), "weight_bits": 4 if nibbles else 8}
            return self.builder_.call_te(partial(matmul_packed, packing=packing, nibbles=nibbles), call.args[0],
                                         relax.const(self._stored(packed, nibbles, pack_matmul_nibbles)),
                                         weight.shape[1], primfunc_name_hint=self._name("matmul", nibbles),
                                         primfunc_attrs=self._attrs(info))
        if name == "relax.nn.conv2d" and _packable_conv(call):
            weight, geometry = call.args[1].value.numpy(), _geometry(call)
            multiple = self.reduce_multiple(geometry, weight.shape[0])
            nibbles = self.nibbles(weight, (1, 2, 3))
            if (multiple == group and weight.shape[0] % LANES == 0 and self.implicit(geometry, weight.shape[0])
                    and not (nibbles and -(-geometry.channels // group) % 2)):  # 4-bit: pairs of channel groups
                return self._implicit_conv(call, weight, geometry, nibbles)
            flat = flatten_conv_weight(weight, multiple)
            by_channels = (multiple == group and self.by_channels(geometry, weight.shape[0])
                           and (not nibbles or flat.shape[1] % (2 * group) == 0))  # 4-bit: pairs of groups
            info = {"op": "conv2d", "weight_shape": list(weight.shape), "strides": list(geometry.strides),
                    "padding": list(geometry.padding), "dilation": list(geometry.dilation),
                    "weight_bits": 4 if nibbles else 8, "lanes": "channels" if by_channels else "pixels"}
            stored = (self._stored(pack_conv_weight_by_channels(flat, group), nibbles, pack_matmul_nibbles)
                      if by_channels else self._stored(flat, nibbles, pack_conv_nibbles, widened=True))
            return self.builder_.call_te(partial(conv2d_im2col, geometry=geometry, packing=packing, nibbles=nibbles),
                                         call.args[0], relax.const(stored),
                                         relax.const(geometry.reduce_offsets(multiple)),
                                         primfunc_name_hint=self._name("conv2d", nibbles),
                                         primfunc_attrs=self._attrs(info))
        if name == "relax.nn.conv2d" and _depthwise(call):
            attrs = call.attrs
            strides, padding, dilation = ([int(v) for v in attrs.strides], [int(v) for v in attrs.padding],
                                          [int(v) for v in attrs.dilation])
            if dilation == [1, 1] and strides[1] <= TAPS_MAX_STRIDE and self.taps:
                data, fill = call.args[0], 0
                padded = None if any(padding) else self._spatial_pad(data)
                if padded is not None:  # the pad (lower_integer's, with the zero point) made per channel, in L1
                    data, padding, fill = padded
                return self.builder_.call_te(partial(depthwise_conv2d_taps, packing=packing, fill=fill), data,
                                             call.args[1], strides, padding,
                                             primfunc_name_hint=self._name("conv2d_depthwise"),
                                             primfunc_attrs=self._attrs())
            data, fill = call.args[0], 0
            padded = None if any(padding) else self._spatial_pad(data)
            if padded is not None:  # the graph's own pad (an ONNX "SAME" one, lower_integer's) made in the kernel
                data, padding, fill = padded
            return self.builder_.call_te(partial(depthwise_conv2d, packing=packing, fill=fill), data, call.args[1],
                                         strides, padding, dilation, primfunc_name_hint=self._name("conv2d_depthwise"),
                                         primfunc_attrs=self._attrs())
        return call


def _constant_pad_value(value: float, dtype: str) -> int | float | None:
    """``value`` as an element of ``dtype`` when it is one (an integer type: an integer in its range), else None."""
    if np.issubdtype(np.dtype(dtype), np.floating):
        return value
    info = np.iinfo(dtype)
    return int(value) if float(value).is_integer() and info.min <= value <= info.max else None


def pack_layers(mod: tvm.IRModule, packing: Packing, accepts: Callable[[relax.Call], bool],
                reduce_multiple: Callable[[ConvGeometry, int], int] | None = None,
                nibbles: Callable[[np.ndarray, tuple[int, ...]], bool] | None = None,
                by_channels: Callable[[ConvGeometry, int], bool] | None = None,
                taps: bool = False, implicit: Callable[[ConvGeometry, int], bool] | None = None,
                grouped: bool = False, activations: bool = False,
                layer_names: dict[relax.Var, str] | None = None) -> tvm.IRModule:
    """``mod`` with every conv2d / matmul that ``accepts`` takes rewritten by ``LayerPacker``; a conv2d's
    flattened reduction is padded to ``reduce_multiple(geometry, out_channels)`` (default: the group); a
    weight for which ``nibbles(weight, reduce_axes)`` holds is stored 4-bit (``passes.int4``); an 8-bit
    conv2d for which ``by_channels(geometry, out_channels)`` holds (default: none) and whose reduction is
    padded only to the group computes with its output channels in the lanes; with ``taps`` (a target with
    ``vpdpbusd`` and ``vpermb``), a depthwise conv2d without dilation becomes ``depthwise_conv2d_taps`` and
    a uint8 max pooling of 3-wide windows at column stride 2 ``max_pool2d_rows``; a conv2d for which
    ``implicit(geometry, out_channels)`` holds, with a multiple of 16 output channels and its reduction padded
    only to the group and an 8-bit weight, becomes ``conv2d_implicit`` (no im2col); with ``grouped``, a
    uint8 x int16 matmul whose weight is a group-wise 4-bit one (``factor_groups``) becomes
    ``matmul_grouped``; with ``activations``, a matmul of two centred uint8 activations (``lower_integer``'s
    ``(astype(a) - za) @ (astype(b) - zb)``) becomes ``matmul_activations``. ``layer_names`` (bound variable
    -> layer name) names the kernels of layers whose bindings do not carry their layer's name already."""
    return rewrite_functions(mod, LayerPacker(mod, packing, accepts, reduce_multiple, nibbles, by_channels, taps,
                                              implicit, grouped, activations, layer_names))


def constant_weight_types(call: relax.Call) -> tuple[str, str, str] | None:
    """(data dtype, weight dtype, result dtype) of a matmul / conv2d whose weight is a constant, else None."""
    data, weight = call.args[0], call.args[1]
    if not isinstance(weight, tvm.ir.expr.GenericConst) or not isinstance(data.ty, relax.TensorType):
        return None
    return str(data.ty.dtype), str(weight.value.dtype), str(call.ty.dtype)


def _geometry(call: relax.Call) -> ConvGeometry:
    attrs, shape = call.attrs, [int(d) for d in call.args[0].ty.shape]
    pair = lambda values: tuple(int(v) for v in values)  # noqa: E731
    return ConvGeometry(shape[1], shape[2], shape[3], pair(call.args[1].value.numpy().shape[2:]), pair(attrs.strides),
                        pair(attrs.padding), pair(attrs.dilation))


def _nchw_batch1(call: relax.Call) -> bool:
    attrs = call.attrs
    return (attrs.data_layout == "NCHW" and attrs.kernel_layout == "OIHW" and attrs.out_layout == "NCHW"
            and int(call.args[0].ty.shape[0]) == 1)


def _depthwise(call: relax.Call) -> bool:
    """One filter per channel (groups == channels == filters), NCHW, batch 1."""
    if not _nchw_batch1(call):
        return False
    channels, filters = int(call.args[0].ty.shape[1]), call.args[1].value.numpy().shape
    return int(call.attrs.groups) == channels == filters[0] and filters[1] == 1


def _rows_poolable(call: relax.Call) -> bool:
    """A uint8 NCHW batch-1 max pooling of windows 3 wide at column stride 2, no dilation, floor mode: what
    ``max_pool2d_rows`` takes."""
    attrs, data = call.attrs, call.args[0].ty
    return (isinstance(data, relax.TensorType) and str(data.dtype) == "uint8" and data.ndim == 4
            and int(data.shape[0]) == 1 and attrs.layout == "NCHW" and attrs.out_layout == "NCHW"
            and int(attrs.pool_size[1]) == 3 and int(attrs.strides[1]) == 2
            and [int(v) for v in attrs.dilation] == [1, 1] and not attrs.ceil_mode)


def _activation_shapes_fit(a: relax.Expr, b: relax.Expr, axes: tuple[int, ...] | None, group: int) -> bool:
    """Static [..., M, K] x [..., K, N] (b's axes permuted by ``axes`` first, if given) with the same leading
    axes and K a multiple of ``group``."""
    try:
        left, right = [int(d) for d in a.ty.shape], [int(d) for d in b.ty.shape]
    except (TypeError, ValueError):
        return False
    if axes is not None:
        right = [right[axis] for axis in axes]
    return (len(left) == len(right) >= 2 and left[:-2] == right[:-2] and left[-1] == right[-2]
            and left[-1] % group == 0)


def _grouped_matmul(call: relax.Call) -> bool:
    """uint8 activations x a constant int16 [K, N] weight with the reduction last, accumulated in int32."""
    types = constant_weight_types(call)
    return (types == ("uint8", "int16", "int32") and call.args[1].value.numpy().ndim == 2
            and int(call.args[0].ty.shape[-1]) == call.args[1].value.numpy().shape[0])


def _packable_matmul(call: relax.Call, group: int) -> bool:
    weight = call.args[1].value.numpy()
    return weight.ndim == 2 and weight.shape[0] % group == 0 and int(call.args[0].ty.shape[-1]) == weight.shape[0]


def _packable_conv(call: relax.Call) -> bool:
    return int(call.attrs.groups) == 1 and _nchw_batch1(call)
