"""Int8 kernels: packed layouts, VNNI code, the fallback without VNNI, exactness, the peak microkernels."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
import tvm
from tvm import te

import compiler
import models
from backends import host_target
from backends.peak import measure_peak
from backends.x86_amx import has_amx
from backends.x86_packed import AVX2, PLAIN, VNNI, build_kernel, has_vnni, instruction_set
from models import mnist_cnn
from passes.packed_layouts import (
    INT8,
    WIDE,
    ConvGeometry,
    conv2d_im2col,
    conv2d_implicit,
    conv_kernel,
    depthwise_conv2d,
    depthwise_conv2d_taps,
    max_pool2d_rows,
    flatten_conv_weight,
    flatten_conv_weight_by_taps,
    matmul_kernel,
    channel_lanes,
    matmul_packed,
    pack_conv_weight_by_channels,
    pack_matmul_weight,
)
from backends.cpu import missing_features
from passes.int4 import pack_conv_nibbles, pack_implicit_nibbles, pack_matmul_nibbles

from .conftest import AVX2_TARGET, PLAIN_TARGET, qc, run_kernel

VNNI_TARGET = tvm.target.Target({"kind": "llvm", "mcpu": "znver4", "num-cores": 2})
RNG = np.random.default_rng(0)


def matmul_case(m: int, k: int, n: int, nibbles: bool = False, packing=INT8):
    a = RNG.integers(0, 256, (m, k), dtype=np.uint8)
    w = RNG.integers(*((-8, 8) if nibbles else (-128, 128)), (k, n), dtype=np.int8)
    packed = pack_matmul_weight(w, packing.group)
    stored = pack_matmul_nibbles(packed) if nibbles else packed
    return matmul_kernel(m, k, n, packing, nibbles=nibbles), [a, stored], a.astype(np.int64) @ w.astype(np.int64)


def conv_case(cin: int, cout: int, kernel: int, stride: int, pad: int, size: int, reduce_multiple: int | None = None,
              nibbles: bool = False, packing=INT8, by_channels: bool = False):
    geometry = ConvGeometry(cin, size, size, (kernel, kernel), (stride, stride), (pad,) * 4, (1, 1))
    w = RNG.integers(*((-8, 8) if nibbles else (-128, 128)), (cout, cin, kernel, kernel), dtype=np.int8)
    x = RNG.integers(0, 256, (1, cin, size, size), dtype=np.uint8)
    multiple = reduce_multiple or packing.group
    flat = flatten_conv_weight(w, multiple)
    by_channel = pack_conv_weight_by_channels(flat) if by_channels else None
    stored = (pack_matmul_nibbles(by_channel) if by_channels and nibbles else by_channel if by_channels
              else pack_conv_nibbles(flat) if nibbles else flat.astype(packing.operand or flat.dtype))
    return (conv_kernel(geometry, cout, packing, reduce_multiple=multiple, nibbles=nibbles, by_channels=by_channels),
            [x, stored, geometry.reduce_offsets(multiple)], _torch_conv(x, w, stride, pad))


def implicit_case(cin: int, cout: int, kernel: int, stride: int, pad: int | tuple, size: int | tuple,
                  dilation: int = 1, requantized: bool = False, residual: bool = False, nibbles: bool = False):
    """A conv2d in the implicit layout (``conv2d_implicit``: an interleaved padded image, no im2col);
    ``pad`` may be (top, left, bottom, right), ``size`` (rows, columns); ``requantized``: the dyadic
    requantize after it, as lower_integer fuses it (the write-back across channel planes); ``residual``:
    then a uint8 input of the output's shape added (less 100, clamped), as a residual add reads one;
    ``nibbles``: a 4-bit weight, two channel groups of a tap per byte (``pack_implicit_nibbles``)."""
    (height, width), padding = ((size, size) if isinstance(size, int) else size), (
        (pad,) * 4 if isinstance(pad, int) else pad)
    geometry = ConvGeometry(cin, height, width, (kernel, kernel), (stride, stride), padding, (dilation, dilation))
    w = RNG.integers(*((-8, 8) if nibbles else (-128, 128)), (cout, cin, kernel, kernel), dtype=np.int8)
    x = RNG.integers(0, 256, (1, cin, height, width), dtype=np.uint8)
    packed = pack_conv_weight_by_channels(flatten_conv_weight_by_taps(w))
    if nibbles:
        packed = pack_implicit_nibbles(packed, kernel * kernel)
    data, weight = te.placeholder(x.shape, "uint8", "data"), te.placeholder(packed.shape, str(packed.dtype), "packed")
    acc = conv2d_implicit(data, weight, geometry, nibbles=nibbles)
    top, left, bottom, right = padding
    padded = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    expected = torch.nn.functional.conv2d(torch.from_numpy(padded.astype(np.float64)),
                                          torch.from_numpy(w.astype(np.float64)), stride=stride,
                                          dilation=dilation).numpy().astype(np.int64)
    if not requantized:
        return te.create_prim_func([data, weight, acc]), [x, packed], expected
    scales = _scales((1, cout, 1, 1), True)
    values = _scale_values(scales)
    out = _requantize(acc, lambda b, o, y, h: (b, o, 0, 0), scales)
    if not residual:
        return te.create_prim_func([data, weight, *scales, out]), [x, packed, *values], _requantized(expected, values)
    from tvm import tirx

    side = te.placeholder(out.shape, "uint8", "residual")
    summed = te.compute(out.shape, lambda *i: tirx.Cast("uint8", tirx.min(tirx.max(
        out[i].astype("int32") + side[i].astype("int32") - 100, 0), 255)), name="residual_add")
    r = RNG.integers(0, 256, [int(d) for d in out.shape], dtype=np.uint8)
    expected = np.clip(_requantized(expected, values).astype(np.int32) + r - 100, 0, 255).astype(np.uint8)
    return te.create_prim_func([data, weight, *scales, side, summed]), [x, packed, *values, r], expected


def depthwise_case(channels: int, kernel: int, stride: int | tuple[int, int], pad: int | tuple[int, int, int, int],
                   size: int | tuple[int, int], taps: bool = False, fill: int = 0):
    """A depthwise conv2d; ``taps``: in the layout of four filter taps per lane (``depthwise_conv2d_taps``),
    its padding filled with ``fill`` (a zero point). ``stride`` and ``size`` may be (rows, columns), ``pad``
    (top, left, bottom, right)."""
    (sy, sx), (height, width) = ((s, s) if isinstance(s, int) else s for s in (stride, size))
    top, left, bottom, right = (pad,) * 4 if isinstance(pad, int) else pad
    data = te.placeholder((1, channels, height, width), "uint8", "data")
    weight = te.placeholder((channels, 1, kernel, kernel), "int8", "weight")
    out = (depthwise_conv2d_taps(data, weight, (sy, sx), (top, left, bottom, right), fill=fill) if taps
           else depthwise_conv2d(data, weight, (sy, sx), (top, left, bottom, right), (1, 1)))
    func = te.create_prim_func([data, weight, out])
    x = RNG.integers(0, 256, (1, channels, height, width), dtype=np.uint8)
    w = RNG.integers(-128, 128, (channels, 1, kernel, kernel), dtype=np.int8)
    padded = np.pad(x, [(0, 0), (0, 0), (top, bottom), (left, right)], constant_values=fill)
    return func, [x, w], _torch_conv(padded, w, (sy, sx), 0, groups=channels)


def max_pool_case(channels: int, kernel: int, pad: int, height: int, width: int):
    """A uint8 max pooling, windows ``kernel`` rows x 3 columns at stride 2 (``max_pool2d_rows``)."""
    data = te.placeholder((1, channels, height, width), "uint8", "data")
    func = te.create_prim_func([data, max_pool2d_rows(data, (kernel, 3), (2, 2), (pad,) * 4)])
    x = RNG.integers(0, 256, (1, channels, height, width), dtype=np.uint8)
    pooled = torch.nn.functional.max_pool2d(torch.from_numpy(x.astype(np.float32)), (kernel, 3), 2, pad)
    return func, [x], pooled.numpy().astype(np.uint8)


MAX_POOLS = {
    "3x3/2 pad 1 @112 (ResNet's: 56 wide, a vector of 32 and one of 24)": lambda: max_pool_case(4, 3, 1, 112, 112),
    "3x3/2 unpadded @15x70 (7 rows: tiles of 7; 34 wide)": lambda: max_pool_case(3, 3, 0, 15, 70),
    "3x3/2 pad 1 @9x9 (5 rows: tiles of 5, one partial vector)": lambda: max_pool_case(5, 3, 1, 9, 9),
    "3x3/2 pad 1 @26 (13 rows: tiles of one row)": lambda: max_pool_case(2, 3, 1, 26, 26),
}


@pytest.mark.parametrize("case", MAX_POOLS)
def test_max_pooling_of_whole_rows_is_exact(case):
    """``max_pool2d_rows``: masked 64-byte loads, the window's rows' maximum, even and odd bytes as 16-bit
    words' halves (where the CPU has AVX-512 VBMI), else LLVM's code; the padding ignored as 0."""
    func, inputs, expected = MAX_POOLS[case]()
    for target in (host_target(2), AVX2_TARGET):
        np.testing.assert_array_equal(run_kernel(func, inputs, expected.shape, "uint8", target), expected)


def requantized_conv_case(cin: int, cout: int, size: int, reduce_multiple: int = 4, narrow: bool = True,
                          by_channels: bool = False):
    """A 1x1 conv with the dyadic requantize after it (int64 add, multiply, rounding shift, clamp to uint8), as
    ``lower_integer`` fuses it: the write-back narrows int64 to bytes over the real pixels of a padded tile
    (``by_channels``: each channel vector of one pixel, across the output's channel planes)."""
    geometry = ConvGeometry(cin, size, size, (1, 1), (1, 1), (0, 0, 0, 0), (1, 1))
    data = te.placeholder((1, cin, size, size), "uint8", "data")
    reduce = -(-cin // reduce_multiple) * reduce_multiple
    flat = te.placeholder((cout // 16, reduce // 4, 16, 4) if by_channels else (cout, reduce), "int8", "flat")
    offsets = te.placeholder(geometry.reduce_offsets(reduce_multiple).shape, "int32", "offsets")
    acc = conv2d_im2col(data, flat, offsets, geometry)
    scales = _scales((1, cout, 1, 1), narrow)
    out = _requantize(acc, lambda b, o, y, x: (b, o, 0, 0), scales)
    x = RNG.integers(0, 256, (1, cin, size, size), dtype=np.uint8)
    w = RNG.integers(-128, 128, (cout, cin, 1, 1), dtype=np.int8)
    values = _scale_values(scales)
    flat_values = flatten_conv_weight(w, reduce_multiple)
    stored = pack_conv_weight_by_channels(flat_values) if by_channels else flat_values
    inputs = [x, stored, geometry.reduce_offsets(reduce_multiple), *values]
    return (te.create_prim_func([data, flat, offsets, *scales, out]), inputs,
            _requantized(_torch_conv(x, w, 1, 0), values))


def requantized_matmul_case(m: int, k: int, n: int):
    """A matmul whose N is padded to 16 lanes, with the dyadic requantize after it."""
    data = te.placeholder((m, k), "uint8", "data")
    packed = te.placeholder((-(-n // 16), k // 4, 16, 4), "int8", "packed")
    scales = _scales((n,), True)
    out = _requantize(matmul_packed(data, packed, n), lambda row, col: (col,), scales)
    a = RNG.integers(0, 256, (m, k), dtype=np.uint8)
    w = RNG.integers(-128, 128, (k, n), dtype=np.int8)
    values = _scale_values(scales)
    return (te.create_prim_func([data, packed, *scales, out]), [a, pack_matmul_weight(w), *values],
            _requantized(a.astype(np.int64) @ w.astype(np.int64), values))


def _requantize(acc, scale_index, scales):
    """``lower_integer``'s requantize, ``(acc * b + R) >> c`` clamped to uint8, its constants as
    ``narrow_constants`` leaves them where they fit int32 (b, c) or int64 throughout."""
    from tvm import tirx

    def compute(*index):
        multiplier, rounding, shift = (s[scale_index(*index)].astype("int64") for s in scales)
        value = (acc[index].astype("int64") * multiplier + rounding) >> shift
        return tirx.Cast("uint8", tirx.min(tirx.max(value, tirx.const(0, "int64")), tirx.const(255, "int64")))

    return te.compute(acc.shape, compute, name="requantize")


def _scales(shape, narrow: bool) -> list:
    return [te.placeholder(shape, "int32" if narrow and name != "rounding" else "int64", name)
            for name in ("multiplier", "rounding", "shift")]


def _scale_values(scales) -> list[np.ndarray]:
    shape = [int(d) for d in scales[0].shape]
    offset, multiplier = RNG.integers(-1000, 1000, shape), RNG.integers(1, 2**30, shape)
    values = [multiplier, offset * multiplier + 2**37, np.full(shape, 38)]
    return [v.astype(str(s.dtype)) for v, s in zip(values, scales)]


def _requantized(acc: np.ndarray, values: list[np.ndarray]) -> np.ndarray:
    multiplier, rounding, shift = (v.astype(np.int64) for v in values)
    return np.clip((acc * multiplier + rounding) >> shift, 0, 255).astype(np.uint8)


def _torch_conv(x, w, stride, pad, groups=1) -> np.ndarray:
    as_float = lambda a: torch.from_numpy(a.astype(np.float64))  # noqa: E731  (exact: sums stay below 2^53)
    return torch.nn.functional.conv2d(as_float(x), as_float(w), stride=stride, padding=pad,
                                      groups=groups).numpy().astype(np.int64)


CASES = {
    "matmul 24x64x40 (N padded to 48)": lambda: matmul_case(24, 64, 40),
    "conv 3x3/1 pad 1, 5->24 @9 (K=45 padded to 48)": lambda: conv_case(5, 24, 3, 1, 1, 9),
    "conv 7x7/2 pad 3, 3->16 @20": lambda: conv_case(3, 16, 7, 2, 3, 20),
    "conv 1x1, 32->16 @7": lambda: conv_case(32, 16, 1, 1, 0, 7),
    "conv 3x3/1 pad 1, 64->24 @48 (a 1.3 MB im2col: read strip by strip)": lambda: conv_case(64, 24, 3, 1, 1, 48),
    "conv 3x3/1 pad 1, 30->32 @7 (K=270 padded to 320: AMX tiles where the host has them)":
        lambda: conv_case(30, 32, 3, 1, 1, 7, reduce_multiple=64),
    "matmul 32x128x48 (AMX tiles where the host has them)": lambda: matmul_case(32, 128, 48),
    "matmul 24x64x40, 4-bit weight (unpacked in the tile)": lambda: matmul_case(24, 64, 40, nibbles=True),
    "matmul 1x256x64, 4-bit weight (a GEMV)": lambda: matmul_case(1, 256, 64, nibbles=True),
    "matmul 32x128x48, 4-bit weight (AMX tiles where the host has them)":
        lambda: matmul_case(32, 128, 48, nibbles=True),
    "conv 3x3/1 pad 1, 5->24 @9, 4-bit weight (K=45 padded to 48: an odd count of groups)":
        lambda: conv_case(5, 24, 3, 1, 1, 9, nibbles=True),
    "conv 3x3/1 pad 1, 30->32 @7, 4-bit weight (AMX tiles where the host has them)":
        lambda: conv_case(30, 32, 3, 1, 1, 7, reduce_multiple=64, nibbles=True),
    "conv 3x3/1 pad 1, 64->32 @7, output channels in the lanes":
        lambda: conv_case(64, 32, 3, 1, 1, 7, by_channels=True),
    "conv 3x3/2 pad 1, 30->48 @14 (to 7x7, K=270 padded to 272), channels in the lanes":
        lambda: conv_case(30, 48, 3, 2, 1, 14, by_channels=True),
    "conv 1x1, 320->64 @5, channels in the lanes (5 pixel rows a tile)":
        lambda: conv_case(320, 64, 1, 1, 0, 5, by_channels=True),
    "conv 3x3/1 pad 1, 64->32 @7, channels in the lanes, 4-bit weight (unpacked in the tile)":
        lambda: conv_case(64, 32, 3, 1, 1, 7, nibbles=True, by_channels=True),
    "conv 1x1, 112->48 @14, channels in the lanes, 4-bit weight":
        lambda: conv_case(112, 48, 1, 1, 0, 14, nibbles=True, by_channels=True),
    # implicit: an interleaved padded image read at each tap, output channels in the lanes, no im2col
    "implicit 3x3/1 pad 1, 16->32 @14": lambda: implicit_case(16, 32, 3, 1, 1, 14),
    "implicit 3x3/2 pad 1, 24->16 @15 (odd size; 5 rows of 4 bytes a tile)": lambda: implicit_case(24, 16, 3, 2, 1, 15),
    "implicit 3x3/1 pad 1, 18->16 @9 (18 channels: the last group half zeros)":
        lambda: implicit_case(18, 16, 3, 1, 1, 9),
    "implicit 5x5/1 pad (2, 1, 2, 3), 16->48 @(6, 11) (uneven padding, a rectangle)":
        lambda: implicit_case(16, 48, 5, 1, (2, 1, 2, 3), (6, 11)),
    "implicit 3x3/1 dilation 2 pad 2, 20->32 @8": lambda: implicit_case(20, 32, 3, 1, 2, 8, dilation=2),
    "implicit 7x7/2 unpadded, 3->16 @21 (three channels)": lambda: implicit_case(3, 16, 7, 2, 0, 21),
    "implicit 3x3/1 pad 1, 32->32 @14, 4-bit weight (two channel groups of a tap per byte)":
        lambda: implicit_case(32, 32, 3, 1, 1, 14, nibbles=True),
    "implicit 3x3/2 pad 1, 24->48 @15, 4-bit weight (6 groups: 3 pairs; odd size)":
        lambda: implicit_case(24, 48, 3, 2, 1, 15, nibbles=True),
    "depthwise 3x3/2 pad 1, 8 @15": lambda: depthwise_case(8, 3, 2, 1, 15),
    "depthwise 5x5/1 pad 2, 6 @12": lambda: depthwise_case(6, 5, 1, 2, 12),
    "depthwise 5x5/2 pad 2, 8 @13 (odd width: phases of 7 and 6 columns)": lambda: depthwise_case(8, 5, 2, 2, 13),
    "depthwise 3x3/2 unpadded, 4 @10": lambda: depthwise_case(4, 3, 2, 0, 10),
    "depthwise 3x3/1 pad 1, 4 @40 (rows wider than a vector: one row per task)": lambda: depthwise_case(4, 3, 1, 1, 40),
    # four taps per lane (vpermb + vpdpbusd where the CPU has them): partial last vectors, several rows a vector
    "depthwise taps 3x3/2 unpadded, 8 @33 (16 wide: one whole vector a row)":
        lambda: depthwise_case(8, 3, 2, 0, 33, taps=True),
    "depthwise taps 3x3/1 unpadded, 6 @40 (38 wide: a partial last vector)":
        lambda: depthwise_case(6, 3, 1, 0, 40, taps=True),
    "depthwise taps 5x5/2 unpadded, 8 @23 (10 wide, 10 rows: two taps groups, the second of one tap)":
        lambda: depthwise_case(8, 5, 2, 0, 23, taps=True),
    "depthwise taps 5x5/1 unpadded, 16 @11 (7x7: two rows a vector, a tile of 7 rows)":
        lambda: depthwise_case(16, 5, 1, 0, 11, taps=True),
    "depthwise taps 5x5/2 unpadded, 8 @17 (7x7 from stride 2: two rows a vector)":
        lambda: depthwise_case(8, 5, 2, 0, 17, taps=True),
    # padded: a channel of up to 64 vectors is one kernel, the padding in its lanes; larger, a padded copy
    "depthwise taps 3x3/1 pad 1, 4 @4 (four rows a vector)":
        lambda: depthwise_case(4, 3, 1, 1, 4, taps=True),
    "depthwise taps 3x3/1 pad 1, 5 @13 (13 rows)":
        lambda: depthwise_case(5, 3, 1, 1, 13, taps=True),
    "depthwise taps 5x5/1 pad 2 filled with 9, 6 @7 (7x7: two rows a vector, a row all padding)":
        lambda: depthwise_case(6, 5, 1, 2, 7, taps=True, fill=9),
    "depthwise taps 3x3/2 pad (0, 0, 1, 1) filled with 5, 8 @14 (TF's 'same': below and right only)":
        lambda: depthwise_case(8, 3, 2, (0, 0, 1, 1), 14, taps=True, fill=5),
    "depthwise taps 5x5/1 pad 2 filled with 200, 4 @28 (two column blocks, 56 vectors)":
        lambda: depthwise_case(4, 5, 1, 2, 28, taps=True, fill=200),
    "depthwise taps 3x3/1 pad 1 filled with 7, 3 @60 (240 vectors: a padded copy)":
        lambda: depthwise_case(3, 3, 1, 1, 60, taps=True, fill=7),
    "depthwise taps 7x7/3 pad 3, 3 @50 (two groups of taps, stride 3)":
        lambda: depthwise_case(3, 7, 3, 3, 50, taps=True),
    "depthwise taps 5x5/2 pad 2 filled with 37 (a zero point), 8 @21":
        lambda: depthwise_case(8, 5, 2, 2, 21, taps=True, fill=37),
    "depthwise taps 3x3 at stride (3, 2), 6 @3x50 (PP-OCR's: one output row, its row loop gone)":
        lambda: depthwise_case(6, 3, (3, 2), 0, (3, 50), taps=True),
}


@pytest.mark.parametrize("case", CASES)
def test_packed_kernels_are_exact_on_this_cpu_and_without_vnni(case):
    func, inputs, expected = CASES[case]()
    # this CPU's own code, then the AVX2 and the plain (SSE2) code, which run on any x86-64 with AVX2
    for target in (host_target(2), AVX2_TARGET, PLAIN_TARGET):
        np.testing.assert_array_equal(run_kernel(func, inputs, expected.shape, "int32", target), expected)


SKYLAKE_TARGET = tvm.target.Target({"kind": "llvm", "mcpu": "skylake-avx512", "num-cores": 2})  # AVX-512, no VNNI
WIDE_CASES = {
    "matmul 24x64x40": lambda: matmul_case(24, 64, 40, packing=WIDE),
    "matmul 1x256x64 (a GEMV)": lambda: matmul_case(1, 256, 64, packing=WIDE),
    "matmul 24x64x40, 4-bit weight": lambda: matmul_case(24, 64, 40, nibbles=True, packing=WIDE),
    "conv 3x3/1 pad 1, 5->24 @9 (K=45 padded to 46)": lambda: conv_case(5, 24, 3, 1, 1, 9, packing=WIDE),
    "conv 7x7/2 pad 3, 3->16 @20": lambda: conv_case(3, 16, 7, 2, 3, 20, packing=WIDE),
    "conv 1x1, 32->16 @7": lambda: conv_case(32, 16, 1, 1, 0, 7, packing=WIDE),
    "conv 3x3/1 pad 1, 64->24 @40 (im2col read strip by strip)": lambda: conv_case(64, 24, 3, 1, 1, 40, packing=WIDE),
    "conv 3x3/1 pad 1, 5->24 @9, 4-bit weight": lambda: conv_case(5, 24, 3, 1, 1, 9, nibbles=True, packing=WIDE),
}


@pytest.mark.parametrize("case", WIDE_CASES)
def test_wide_kernels_for_cpus_without_vnni_are_exact(case):
    """The int16 ``vpmaddwd`` kernels ``pack_int8_layers`` gives CPUs without AVX-512 VNNI, built for
    ``haswell`` (ymm) and, where this CPU can run it, ``skylake-avx512`` (zmm), run here."""
    func, inputs, expected = WIDE_CASES[case]()
    targets = [AVX2_TARGET] + ([SKYLAKE_TARGET] if not missing_features(SKYLAKE_TARGET) else [])
    for target in targets:
        np.testing.assert_array_equal(run_kernel(func, inputs, expected.shape, "int32", target), expected)


def test_convolutions_whose_pixels_leave_lanes_empty_put_their_channels_in_the_lanes():
    """``channel_lanes``: 7x7 and 14x14 outputs (49 and 196 pixels in 64 and 208 lanes) with a reduction of at
    least 64 and whole vectors of channels; 28x28 and 56x56 fill their vectors; short reductions stay."""
    def geometry(cin, kernel, stride, size):
        return ConvGeometry(cin, size, size, (kernel, kernel), (stride, stride), ((kernel - 1) // 2,) * 4, (1, 1))

    assert channel_lanes(geometry(512, 3, 1, 7), 512) and channel_lanes(geometry(256, 3, 2, 14), 512)
    assert channel_lanes(geometry(256, 3, 1, 14), 256) and channel_lanes(geometry(1152, 1, 1, 7), 320)
    assert not channel_lanes(geometry(64, 3, 1, 56), 64) and not channel_lanes(geometry(128, 3, 1, 28), 128)
    assert channel_lanes(geometry(112, 1, 1, 14), 672) and not channel_lanes(geometry(32, 1, 1, 14), 192)
    assert not channel_lanes(geometry(512, 3, 1, 7), 40)  # 40 channels: not whole vectors
    assert not channel_lanes(geometry(512, 3, 1, 3), 64)  # 9 pixels: no tile of 4 to 8 rows


def test_depthwise_taps_and_max_pooling_build_to_vpermb_where_the_cpu_has_vbmi():
    """Built for ``znver4`` (VNNI + VBMI; built only, whatever this CPU): the depthwise kernel's operands come
    from ``vpermb`` into ``vpdpbusd``; a small channel's padding from the image itself, the fill merged into
    the masked loads (``vpblendmb`` from memory, or ``vmovdqu8`` under a mask), a large one's (60x60: over
    64 vectors) and the pooling from masked 64-byte moves; built for ``haswell``, the same layouts are plain
    AVX2 code."""
    small = depthwise_case(8, 5, 1, 2, 14, taps=True, fill=3)[0]
    large = depthwise_case(4, 3, 1, 1, 60, taps=True, fill=3)[0]
    pooling = max_pool_case(4, 3, 1, 20, 20)[0]
    merged = r"(vpblendmb|vmovdqu8)\s+-?\d*\(%\w+\), (%zmm\d+, )?%zmm\d+ \{%k\d\}\n"
    for func, instructions in ((small, ("vpermb", "vpdpbusd", merged)), (large, ("vpermb", "vpdpbusd", "vmovdqu8")),
                               (pooling, ("vpmovwb", "vpmaxub"))):
        asm = build_kernel(func, VNNI_TARGET).mod.inspect_source("asm")
        assert all(re.search(name, asm) for name in instructions), [n for n in instructions if not re.search(n, asm)]
        assert "vpermb" not in build_kernel(func, AVX2_TARGET).mod.inspect_source("asm")


def test_a_zero_point_pad_before_a_depthwise_layer_goes_into_its_kernel_where_the_cpu_has_vbmi():
    """``pack_int8_layers`` under a VNNI + VBMI target: ``pad(x, zero point) -> depthwise conv2d`` becomes one
    kernel of four taps per lane whose padding stage fills with the zero point; under ``haswell`` the pad
    stays a separate op."""
    from tvm import relax

    from passes.pack_int8_layers import pack_int8_layers

    def module():
        builder = relax.BlockBuilder()
        x = relax.Var("x", relax.TensorType((1, 8, 10, 10), "uint8"))
        with builder.function("main", [x]):
            with builder.dataflow():
                padded = builder.emit(relax.op.nn.pad(x, [0, 0, 0, 0, 1, 1, 1, 1], pad_value=37.0))
                weight = relax.const(RNG.integers(-128, 128, (8, 1, 3, 3), dtype=np.int8))
                out = builder.emit_output(relax.op.nn.conv2d(padded, weight, groups=8, out_dtype="int32"))
            builder.emit_func_output(out)
        return builder.get()

    def kernels(target):
        with target:
            packed = pack_int8_layers(module())
        return [f.script() for f in packed.functions.values() if isinstance(f, tvm.tirx.PrimFunc)]

    taps = [text for text in kernels(VNNI_TARGET) if "qc.input_pitch" in text]
    assert len(taps) == 1 and "T.uint8(37)" in taps[0]
    assert not any("qc.input_pitch" in text for text in kernels(AVX2_TARGET))


def test_windowed_convolutions_read_an_interleaved_image_where_the_cpu_has_vnni():
    """``pack_int8_layers`` under a VNNI target: a 3x3 conv of 16 channels becomes ``conv2d_implicit`` (an
    ``image`` stage, no im2col); a 3-channel 7x7 stem and a 1x1 stride-2 conv keep im2col; under ``haswell``
    (no VNNI) every conv keeps im2col."""
    from tvm import relax

    from passes.pack_int8_layers import pack_int8_layers

    def module():
        builder = relax.BlockBuilder()
        x = relax.Var("x", relax.TensorType((1, 3, 32, 32), "uint8"))
        y = relax.Var("y", relax.TensorType((1, 16, 16, 16), "uint8"))
        with builder.function("main", [x, y]):
            with builder.dataflow():
                convs = [builder.emit(relax.op.nn.conv2d(data, relax.const(RNG.integers(-128, 128, shape, np.int8)),
                                                         strides=stride, padding=pad, out_dtype="int32"))
                         for data, shape, stride, pad in ((x, (16, 3, 7, 7), 2, 3), (y, (32, 16, 3, 3), 1, 1),
                                                          (y, (32, 16, 1, 1), 2, 0))]
                out = builder.emit_output(relax.Tuple(convs))
            builder.emit_func_output(out)
        return builder.get()

    def layouts(target):
        with target:
            packed = pack_int8_layers(module())
        texts = [f.script() for f in packed.functions.values() if isinstance(f, tvm.tirx.PrimFunc)]
        return sorted(("image" if "qc_int8_image" in t else "im2col" if "qc_int8_im2col" in t else "?") for t in texts)

    assert layouts(VNNI_TARGET) == ["im2col", "im2col", "image"]
    assert "image" not in layouts(AVX2_TARGET)


def test_cpus_without_vnni_get_the_wide_kernels():
    from passes.pack_int8_layers import packing_for

    assert [packing_for(t) for t in (AVX2_TARGET, SKYLAKE_TARGET, VNNI_TARGET, PLAIN_TARGET, None)] == [
        WIDE, WIDE, INT8, INT8, INT8]
    func = matmul_case(8, 32, 32, packing=WIDE)[0]
    for target, register in ((AVX2_TARGET, "ymm"), (SKYLAKE_TARGET, "zmm")):
        asm = build_kernel(func, target).mod.inspect_source("asm")
        assert re.search(rf"vpmaddwd\s+[^\n]*{register}", asm) and "vpmaddubsw" not in asm


REQUANTIZED = {
    # pixels 49 and 25 (a tail of one past a multiple of 4), several output-channel tiles per thread: LLVM 22 once
    # turned the one-byte tail of the write-back into an 8-byte store over the next channel's first pixels
    "conv 1x1 672->192 @7 + requantize": lambda: requantized_conv_case(672, 192, 7),
    "conv 1x1 64->96 @5 + requantize": lambda: requantized_conv_case(64, 96, 5),
    "conv 1x1 128->64 @7 + requantize (AMX where the host has it)": lambda: requantized_conv_case(128, 64, 7, 64),
    "conv 1x1 112->672 @14 + requantize": lambda: requantized_conv_case(112, 672, 14),
    "conv 1x1 96->576 @7 + requantize (MobileNetV3-Small's; constants all int64)":
        lambda: requantized_conv_case(96, 576, 7, narrow=False),
    "conv 1x1 96->576 @7 + requantize (b and c int32)": lambda: requantized_conv_case(96, 576, 7),
    "matmul 24x64x33 + requantize (N padded to 48)": lambda: requantized_matmul_case(24, 64, 33),
    "conv 1x1 672->192 @7 + requantize, channels in the lanes (a scattered write-back)":
        lambda: requantized_conv_case(672, 192, 7, by_channels=True),
    "conv 1x1 320->64 @14 + requantize, channels in the lanes":
        lambda: requantized_conv_case(320, 64, 14, by_channels=True),
    "implicit 3x3/1 pad 1, 32->48 @7 + requantize": lambda: implicit_case(32, 48, 3, 1, 1, 7, requantized=True),
    "implicit 3x3/2 pad 1, 16->32 @13 + requantize": lambda: implicit_case(16, 32, 3, 2, 1, 13, requantized=True),
    # a tile of 7 pixels x 32 channels in one output row: written (and its residual read) through byte
    # permutes where the CPU has VBMI (backends.x86_transpose)
    "implicit 3x3/1 pad 1, 32->64 @14 + requantize + residual (transposed write-back)":
        lambda: implicit_case(32, 64, 3, 1, 1, 14, requantized=True, residual=True),
    "implicit 3x3/1 pad 1, 16->16 @7 + requantize + residual (7 x 16 tiles)":
        lambda: implicit_case(16, 16, 3, 1, 1, 7, requantized=True, residual=True),
    "implicit 3x3/1 pad 1, 16->32 @(5, 9) + requantize + residual (rows of 9: tiles across rows, not transposed)":
        lambda: implicit_case(16, 32, 3, 1, 1, (5, 9), requantized=True, residual=True),
    "implicit 3x3/1 pad 1, 64->64 @14, 4-bit weight + requantize + residual (sums shifted back first)":
        lambda: implicit_case(64, 64, 3, 1, 1, 14, requantized=True, residual=True, nibbles=True),
}


def test_write_back_across_channel_planes_is_byte_permutes_with_vbmi():
    func = implicit_case(32, 64, 3, 1, 1, 14, requantized=True, residual=True)[0]
    asm = build_kernel(func, VNNI_TARGET).mod.inspect_source("asm")
    assert re.search(r"vperm[it]2b", asm) and "vpextrb" not in asm and "vpinsrb" not in asm
    assert not re.search(r"vperm[it]2b", build_kernel(func, AVX2_TARGET).mod.inspect_source("asm"))


@pytest.mark.parametrize("case", REQUANTIZED)
def test_requantized_write_back_is_exact_and_stays_inside_its_output(case):
    func, inputs, expected = REQUANTIZED[case]()
    for target in (host_target(2), AVX2_TARGET, PLAIN_TARGET):
        np.testing.assert_array_equal(run_kernel(func, inputs, expected.shape, "uint8", target), expected)


def test_each_instruction_set_gets_its_own_dot_product_step():
    assert [instruction_set(t) for t in (VNNI_TARGET, AVX2_TARGET, PLAIN_TARGET)] == [VNNI, AVX2, PLAIN]
    # AVX-512 without VNNI takes the exact AVX2 step (built only: this CPU may lack AVX-512)
    skylake = tvm.target.Target({"kind": "llvm", "mcpu": "skylake-avx512", "num-cores": 2})
    assert instruction_set(skylake) == AVX2
    assert "vpmaddwd" in build_kernel(matmul_case(8, 32, 32)[0], skylake).mod.inspect_source("asm")
    for func, _, _ in (matmul_case(8, 32, 32), conv_case(4, 16, 3, 1, 1, 6)):
        assert "vpdpbusd" in build_kernel(func, VNNI_TARGET).mod.inspect_source("asm")
        avx2 = build_kernel(func, AVX2_TARGET).mod.inspect_source("asm")
        assert "vpmaddwd" in avx2 and "vpdpbusd" not in avx2
        assert "vpmaddubsw" not in avx2  # its int16 sums saturate: never used
    assert has_vnni(VNNI_TARGET) and not has_vnni(AVX2_TARGET)


AMX_TARGET = tvm.target.Target({"kind": "llvm", "mcpu": "sapphirerapids", "num-cores": 2})


def test_amx_targets_get_tile_kernels_where_the_shape_fits():
    """Built only (any host): a matmul takes ``tdpbusd`` (data uint8 x packed weight int8), a convolution with
    its reduction padded to 64 ``tdpbsud`` (flat weight int8 x im2col uint8); shapes that do not fit the tiles
    keep ``vpdpbusd``. On an AMX host the requantized cases above run the tile code (bit-exact)."""
    def asm(func):
        return build_kernel(func, AMX_TARGET).mod.inspect_source("asm")

    geometry = ConvGeometry(64, 7, 7, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1))
    assert "tdpbusd" in asm(matmul_kernel(32, 128, 48))
    assert "tdpbsud" in asm(conv_kernel(geometry, 32, reduce_multiple=64))
    ragged = asm(matmul_kernel(24, 64, 40))  # 24 rows: not a multiple of 16
    assert "tdpb" not in ragged and "vpdpbusd" in ragged


def test_conv_reductions_are_padded_for_amx_tiles_where_the_layer_takes_them():
    from passes.pack_int8_layers import _tile_friendly

    def geometry(channels, kernel):
        return ConvGeometry(channels, 56, 56, (kernel, kernel), (1, 1), (0, 0, 0, 0), (1, 1))

    amx, vnni = _tile_friendly(AMX_TARGET), _tile_friendly(VNNI_TARGET)
    assert amx(geometry(64, 3), 64) == 64  # 576: a multiple of 64 already
    assert amx(geometry(672, 1), 192) == 64  # 672 -> 704: under 1/8 more
    assert amx(geometry(3, 7), 64) == 64  # the 7x7 stem: 147 -> 192 (measured level in the model)
    assert amx(geometry(16, 1), 96) == 4  # a reduction under AMX_MIN_REDUCTION
    assert amx(geometry(64, 3), 24) == 4  # output channels not a multiple of 16
    assert vnni(geometry(64, 3), 64) == 4


def test_tile_search_tries_each_fitted_tile_once_most_accumulators_first():
    from backends.int8_tuning import candidates
    from backends.x86_packed import register_tile_extents

    conv = conv_case(64, 64, 3, 1, 1, 28)[0]  # 64 channels x 49 blocks of 16 pixels
    extents = register_tile_extents(conv, VNNI_TARGET)
    assert extents == (64, 49)
    tiles = [(k.rows, k.blocks) for k in candidates(VNNI_TARGET, extents)]
    assert tiles[0] == (16, 1)  # the default 8 x 3 as fit_tile makes it here (24 accumulators at most)
    assert len(set(tiles)) == len(tiles) and all(64 % r == 0 and 49 % b == 0 for r, b in tiles)
    unfitted = candidates(VNNI_TARGET)
    assert [k.rows * k.blocks for k in unfitted[1:]] == sorted((k.rows * k.blocks for k in unfitted[1:]), reverse=True)
    # no register tile: a matmul that fits AMX tiles on an AMX target, a depthwise conv anywhere
    assert register_tile_extents(matmul_kernel(32, 128, 48), AMX_TARGET) is None
    assert register_tile_extents(matmul_kernel(32, 128, 48), VNNI_TARGET) == (32, 3)
    assert register_tile_extents(depthwise_case(8, 3, 1, 1, 8)[0], VNNI_TARGET) is None


def test_weight_packing_layouts():
    w = np.arange(8 * 20).reshape(8, 20).astype(np.int8)  # K=8, N=20 -> N padded to 32
    packed = pack_matmul_weight(w)
    assert packed.shape == (2, 2, 16, 4)
    assert packed[1, 1, 3, 2] == w[4 + 2, 16 + 3] and packed[1, 0, 5, 0] == 0  # column 21 is padding
    flat = flatten_conv_weight(np.ones((4, 3, 3, 3), np.int8))
    assert flat.shape == (4, 28) and flat[:, 27].sum() == 0 and flat[:, :27].all()


def test_quantized_model_is_bit_exact_with_and_without_packed_layers(mnist_imported):
    digits = mnist_cnn.load_split()[0]
    samples = [{"input": d[None]} for d in digits[:16]]
    packed = compiler.compile(mnist_imported, quantize="w8a8", calibration=samples)
    plain = compiler.compile(mnist_imported, quantize="w8a8", calibration=samples,
                             passes=[p for p in compiler.DEFAULT_PASSES if p != "pack_int8_layers"])
    assert "pack_int8_layers" in [step["pass"] for step in packed.manifest["pipeline"]]
    for d in digits[100:130]:
        np.testing.assert_array_equal(packed.run(d[None])["output_0"], plain.run(d[None])["output_0"])


@pytest.mark.parametrize("scheme", ["w8a8", "w4a8"])
def test_a_model_built_for_cpus_without_vnni_gives_the_host_builds_bits(mnist_imported, scheme):
    """The whole pipeline for ``haswell`` (WIDE kernels on ymm) and, where this CPU runs it, ``skylake-avx512``
    (WIDE on zmm), with 8-bit and 4-bit weights: the same outputs as the host's build, bit for bit."""
    digits = mnist_cnn.load_split()[0]
    samples = [{"input": d[None]} for d in digits[:16]]
    host = compiler.compile(mnist_imported, quantize=scheme, calibration=samples)
    targets = [AVX2_TARGET] + ([SKYLAKE_TARGET] if not missing_features(SKYLAKE_TARGET) else [])
    for target in targets:
        other = compiler.compile(mnist_imported, quantize=scheme, calibration=samples, target=target)
        kernels = [k for k in other.manifest.get("kernel_info", {}) if "_u8i" in k]
        assert kernels, "no packed kernel in the build"
        for d in digits[100:120]:
            np.testing.assert_array_equal(other.run(d[None])["output_0"], host.run(d[None])["output_0"])


def test_peak_microkernels_measure_something_plausible():
    peak = measure_peak(host_target(1), iterations=20_000, repeat=2)
    assert peak.fp32_gflops > 1 and peak.cores == 1
    isa = instruction_set(host_target(1))
    if isa == VNNI:
        assert peak.int8_gops > 2 * peak.fp32_gflops  # 64 int8 products vs 16 fp32 per instruction
    elif isa == AVX2:
        assert peak.int8_gops > peak.fp32_gflops  # 16 int16 products per vpmaddwd vs 8 fp32 per vfmadd
    else:
        assert peak.int8_gops is None
    if has_amx(host_target(1)):  # 16 x 16 x 64 products per tdpbusd vs 64 x 4 per vpdpbusd
        assert peak.amx_int8_gops > 2 * peak.int8_gops
    else:
        assert peak.amx_int8_gops is None


def test_tuning_searches_the_wide_kernels_tiles_too(tmp_path):
    """For a CPU without VNNI the tile search takes the WIDE kernels, within its register budget."""
    from backends.int8_tuning import KnobDatabase, candidates, tune_int8
    from backends.x86_packed import max_accumulators

    assert max_accumulators(AVX2_TARGET, WIDE) == 6 and max_accumulators(SKYLAKE_TARGET, WIDE) == 28
    assert all(k.rows * k.blocks <= 6 for k in candidates(AVX2_TARGET, packing=WIDE))
    func = matmul_case(32, 64, 64, packing=WIDE)[0].with_attr("global_symbol", "wide_matmul")
    report = tune_int8(tvm.IRModule({"wide_matmul": func}), AVX2_TARGET, KnobDatabase(tmp_path), trials=3)
    assert report["int8_kernels"] == 1 and report["int8_tuned"] == 1 and report["int8_trials"] == 3
    assert KnobDatabase(tmp_path).lookup(AVX2_TARGET, func) is not None


def test_tuning_int8_tiles_keeps_results_and_reuses_its_database(tmp_path):
    digits = mnist_cnn.load_split()[0]
    np.savez(tmp_path / "calib.npz", input=digits[:16])
    args = ["mnist-cnn", "--quantize", "w8a8", "--calib", str(tmp_path / "calib.npz"), "--work-dir",
            str(tmp_path / "tuning")]
    result = qc("tune", *args, "--trials", "4", "-o", str(tmp_path / "tuned"))
    assert result.returncode == 0, result.stderr
    # the two heaviest kernels with a register tile (3 on a vector CPU; on AMX one conv takes tiles instead),
    # up to 2 distinct tiles each (fewer where fit_tile makes two candidates the same tile on that kernel)
    found = re.search(r"int8 kernels (\d+) \(tiles searched now 2 in (\d+) trials", result.stdout)
    assert found, result.stdout
    kernels, trials = int(found[1]), int(found[2])
    records = json.loads((tmp_path / "tuning" / "int8_knobs.json").read_text())
    (per_target,) = records.values()
    assert len(per_target) == 2 and trials == sum(r["candidates"] for r in per_target.values()) <= 4
    assert all(1 <= r["candidates"] <= 2 and r["us"] > 0 for r in per_target.values())
    again = qc("tune", *args, "--trials", "2")  # the rest now; the first two come from the database
    assert again.returncode == 0 and f"tiles searched now {kernels - 2} in" in again.stdout
    assert "from the database 2" in again.stdout
    untuned = compiler.compile(models.get("mnist-cnn").module, example_inputs=models.get("mnist-cnn").example_inputs,
                               input_names=("input",), quantize="w8a8", calibration=tmp_path / "calib.npz")
    tuned = compiler.load(tmp_path / "tuned")
    for d in digits[200:220]:
        np.testing.assert_array_equal(tuned.run(d[None])["output_0"], untuned.run(d[None])["output_0"])
