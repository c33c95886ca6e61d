"""Packed kernels for x86: register-tile schedules for the layouts of ``passes.packed_layouts``.

``pack_int8_layers`` and ``pack_float_layers`` rewrite layers into compute blocks (``packed_layouts``) with 16
output elements in the vector lanes and the reduction in groups of ``g`` (4 for int8: the width of
``vpdpbusd``, 16 int32 lanes each += 4 uint8 x int8 products; 1 for float32: one FMA):

- ``qc_*_matmul``: ``acc[m, n] += data[m, k] * W[n // 16, k // g, n % 16, k % g]``: 16 output columns in the
  lanes, activations broadcast, the weight pre-packed so each step loads one contiguous vector;
- ``qc_*_conv``: ``acc[o, p] += col[r // g, p, r % g] * W[o, r]``: 16 output pixels in the lanes (im2col in
  groups of ``g`` reduction elements, ``qc_*_im2col``), weights broadcast, the output already NCHW; or, where
  the pixels would leave lanes empty (``packed_layouts.channel_lanes``: 7x7, 14x14),
  ``acc[p, o] += col[r // g, p, r % g] * W[o // 16, r // g, o % 16, r % g]``: 16 output channels in the lanes
  as in the matmul (``channel_tile``: 7 pixel rows x 2 channel vectors, channel block by channel block so
  a block's weight stays in cache for every pixel), the write-back storing across the channel planes
  (through byte permutes where the CPU has VBMI: ``backends.x86_transpose``); or,
  for an implicit convolution (``packed_layouts.conv2d_implicit``, no im2col: ``qc_int8_image``, the padded
  input with four channels interleaved), ``acc[p, o] += image[c4, y*sy + i, x*sx + j, t] * W[o // 16, step,
  o % 16, t]``, channels in the lanes, tiles of 7 pixels x 2 channel vectors (``IMPLICIT_KNOBS``), the
  reduction loops channel group, filter row and filter column outside the tile;
- ``qc_*_depthwise``: tiles of output rows with the columns in the lanes, summed filter column by filter
  column so the rows of a tile share their input rows; a tile or (rows of one vector) a channel per task.
  The layout of four taps per lane (``depthwise_conv2d_taps``, where the CPU has VNNI and VBMI) and max
  pooling by rows (``qc_int8_maxpool``) go to ``backends.x86_depthwise``.

``schedule_packed_kernels`` schedules every kernel holding one of them: register tiles of ``rows`` x
``blocks`` accumulators (16 lanes each) kept in registers across the whole reduction, the tile loop parallel
(a convolution with a large im2col strip of pixels by strip, ``CACHED_IM2COL_BYTES``), the 16 x g inner step
tensorized; where the target has AMX-INT8 and the shape fits, an int8 matmul or convolution runs on tile
registers instead (``backends.x86_amx``). The vector steps:

- int8 with ``avx512-vnni`` (``instruction_set``): one ``vpdpbusd``;
- ``WIDE`` (what ``pack_int8_layers`` gives a CPU with AVX2 but not VNNI: operands already int16, 16 x 2
  steps): one ``vpmaddwd`` and one ``vpaddd`` on zmm where the CPU has AVX-512 BW, two of each on ymm
  otherwise;
- INT8 kernels on ``avx2`` (the packer did not know the target): the 8-bit operands widened to int16
  (``vpmovsxbw`` / ``vpmovzxbw``) and four ``vpmaddwd``, whose lanes hold sums of two products; the tile
  keeps those half sums apart (``rfactor``: two int32 per output) and adds them once, in the write-back.
  Never ``vpmaddubsw``, whose int16 sums saturate;
- int8 ``plain`` (neither): LLVM's loop vectorizer on the unrolled step;
- float32: one vector multiply-add of 16 lanes, which LLVM contracts into FMAs.

A 4-bit weight (``passes.int4``, an ``unpack`` block) is unpacked inside the matmul's register tile: the
reduction loop goes two groups at a time and each 64-byte load of the weight becomes the operands of both
(LLVM emits ``vpandq`` and ``vgf2p8affineqb`` where the CPU has GFNI, ``vpsllw`` and ``vpand`` elsewhere). A
convolution broadcasts its weight, and AMX tiles load theirs from memory, so those unpack the whole weight
once per call at the kernel's root (parallel over rows, a vector per block), the AMX matmul then running its
tiles column block by column block so each thread reads the part it unpacked.

The epilogue that fusion put in the same kernel (requantize / bias / clamp / cast; bias / residual add /
ReLU) is folded into the write-back of each tile and vectorized (its int32 multiply-high made two
``vpmuldq`` per vector after vectorization: ``backends.x86_high_product``). Integer arithmetic is exact on every path,
so every int8 schedule returns the untuned kernel's bits; float sums keep their order along the reduction.

Knobs (``Knobs``) are the register tile; defaults per instruction set were measured on a 128x768x768 matmul
and ResNet-18's convolutions (``benchmarks/int8_kernels.py``); a tile that does not divide a kernel's loops
becomes the dividing one with the most accumulators (``fit_tile``). The VNNI intrinsic is TVM's ``dot_16x4_vnni`` repaired for LLVM 22,
whose ``vpdpbusd`` takes ``<64 x i8>`` operands (DESIGN.md section 3)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import tvm
from tvm import s_tir
from tvm.s_tir import TensorIntrin
from tvm.script import tirx as T

from passes.int4 import SHIFT, conv_nibble_block
from passes.packed_layouts import (CHANNEL_LANES, CHANNEL_TILE_ROWS, FP32, IMAGE_SHAPE, IMPLICIT, INT8, LANES, NIBBLES,
                                   OUTPUT_WIDTH, ROW_STRIDE, TAPS_FEATURES, WIDE, Packing)

from .x86_amx import fits_tiles, has_amx, schedule_amx
from .x86_depthwise import is_taps_block, schedule_depthwise_taps, without_kernel_inits
from .x86_transpose import TRANSPOSE_FEATURES, transpose_write_back

VNNI_ROW_INTRIN = "qc_vnni_16x4_lanes_from_weight"   # matmul: lanes over output columns
VNNI_COL_INTRIN = "qc_vnni_16x4_lanes_from_data"     # conv: lanes over output pixels
_VPDPBUSD = "llvm.x86.avx512.vpdpbusd.512"


def _has_features(target: tvm.target.Target, *features: str) -> bool:
    """Whether ``target`` is an LLVM CPU target with every one of ``features``."""
    if target.kind.name != "llvm":
        return False
    from tvm.target.codegen import target_has_features

    return all(bool(target_has_features(f, target)) for f in features)


def has_vnni(target: tvm.target.Target) -> bool:
    """Whether ``target``'s CPU has AVX-512 VNNI (``vpdpbusd`` on 512-bit registers)."""
    return _has_features(target, "avx512vnni", "avx512bw")


def has_avx2(target: tvm.target.Target) -> bool:
    """Whether ``target``'s CPU has AVX2 (``vpmaddwd`` on 256-bit registers)."""
    return _has_features(target, "avx2")


VNNI, AVX2, PLAIN = "avx512-vnni", "avx2", "plain"
INSTRUCTION_SETS = (VNNI, AVX2, PLAIN)


def instruction_set(target: tvm.target.Target) -> str:
    """Which 16x4 step the int8 schedules use on ``target``: ``avx512-vnni`` (``vpdpbusd``), ``avx2``
    (``vpmaddwd`` on operands widened to int16) or ``plain`` (LLVM's own vector code)."""
    return VNNI if has_vnni(target) else AVX2 if has_avx2(target) else PLAIN


@dataclass(frozen=True)
class Knobs:
    """The register tile: ``rows`` x ``blocks`` accumulators of 16 int32 lanes (at most 28 of 32 zmm)."""

    rows: int = 8
    blocks: int = 3

    def __post_init__(self) -> None:
        if self.rows < 1 or self.blocks < 1 or self.rows * self.blocks > 28:
            raise ValueError(f"register tile {self.rows}x{self.blocks} does not fit 28 vector registers")


DEFAULT_KNOBS = Knobs()
DEFAULT_KNOBS_BY_SET = {VNNI: DEFAULT_KNOBS, AVX2: Knobs(2, 1), PLAIN: Knobs(2, 3)}
"""Measured on the 128x768x768 matmul and ResNet-18's 3x3 convs (``benchmarks/int8_kernels.py``): 8x3 on
znver4 with VNNI; with AVX2 2x1 on znver3 (16 ymm registers; an accumulator of two half sums per lane takes
four)."""
FLOAT_KNOBS_BY_SET = {VNNI: DEFAULT_KNOBS, AVX2: Knobs(2, 2), PLAIN: Knobs(2, 2)}
"""Float32 tiles: with AVX2 2x2 (8 ymm of accumulators) measured best on ResNet-18's 3x3 convs and a 128x384x384
matmul on znver3 (2x3: 63-98 GFLOP/s, 2x2: 85-119); with AVX-512 the int8 tile (not measured for float)."""
MAX_ACCUMULATORS = {VNNI: 28, AVX2: 3, PLAIN: 6}
"""Accumulators a tile may keep in registers: 32 zmm hold 28 and the operands; 16 ymm hold 3 AVX2 pair
accumulators (12 ymm) or 6 plain ones (two ymm each) and the widened operands."""


WIDE_KNOBS = {True: Knobs(8, 3), False: Knobs(2, 2)}
"""``WIDE`` tiles on 512-bit (True) and 256-bit registers (False): an accumulator of 16 int32 lanes takes one
zmm or two ymm. Measured on the 128x768x768 matmul and ResNet-18's 3x3 64->64 at 56x56 and 512->512 at 7x7
(``benchmarks/int8_kernels.py --mcpu skylake-avx512 | haswell --rows R --blocks B``, Sapphire Rapids guest):
with zmm 8x3 and 12x2 lead (445 / 861 / 1030 us), 4x3 and 6x2 5-7% behind; with ymm 2x2 (700 / 1139 / 1550 us)
and 4x1 (629 / 1138 / 1640) against 2x3 (1195 / 1165 / 1543) and 1x4 (889 / 1538 / 1754)."""


def default_knobs(target: tvm.target.Target, packing: Packing = INT8) -> Knobs:
    """The register tile the schedules use on ``target`` when no tuning database names one."""
    if packing is WIDE:
        return WIDE_KNOBS[has_avx512bw(target)]
    return (DEFAULT_KNOBS_BY_SET if packing is INT8 else FLOAT_KNOBS_BY_SET)[instruction_set(target)]


def max_accumulators(target: tvm.target.Target, packing: Packing = INT8) -> int:
    """The most accumulators of 16 lanes a register tile of ``packing`` may hold on ``target``: an INT8 tile
    by ``MAX_ACCUMULATORS``; a ``WIDE`` one 28 zmm, or 6 of two ymm each (12 of the 16 ymm)."""
    if packing is WIDE:
        return 28 if has_avx512bw(target) else 6
    return MAX_ACCUMULATORS[instruction_set(target)]


def has_avx512bw(target: tvm.target.Target) -> bool:
    """Whether ``target``'s CPU has AVX-512 BW (byte and word operations, ``vpmaddwd``, on 512-bit registers)."""
    return _has_features(target, "avx512bw")


def _descriptions(group: int = 4, data: str = "uint8", weight: str = "int8"):
    """What the 16 x ``group`` step computes, in both orientations: ``c[i] += sum_k a[k] * b[i, k]`` (row: lanes
    over the weight's columns, ``a`` the data) and ``c[i] += sum_k a[i, k] * b[k]`` (col: lanes over the data's
    pixels, ``b`` the weight), on ``data`` x ``weight`` operands."""

    @T.prim_func(s_tir=True)
    def row_desc(a: T.Buffer((group,), data, offset_factor=1), b: T.Buffer((16, group), weight, offset_factor=1),
                 c: T.Buffer((16,), "int32", offset_factor=1)) -> None:
        with T.sblock("root"):
            T.reads(c[0:16], a[0:group], b[0:16, 0:group])
            T.writes(c[0:16])
            for i, k in T.grid(16, group):
                with T.sblock("update"):
                    vi, vk = T.axis.remap("SR", [i, k])
                    c[vi] = c[vi] + T.cast(a[vk], "int32") * T.cast(b[vi, vk], "int32")

    @T.prim_func(s_tir=True)
    def col_desc(a: T.Buffer((16, group), data, offset_factor=1), b: T.Buffer((group,), weight, offset_factor=1),
                 c: T.Buffer((16,), "int32", offset_factor=1)) -> None:
        with T.sblock("root"):
            T.reads(c[0:16], a[0:16, 0:group], b[0:group])
            T.writes(c[0:16])
            for i, k in T.grid(16, group):
                with T.sblock("update"):
                    vi, vk = T.axis.remap("SR", [i, k])
                    c[vi] = c[vi] + T.cast(a[vi, vk], "int32") * T.cast(b[vk], "int32")

    return row_desc, col_desc


def _implementations(row_step, col_step, group: int = 4, data: str = "uint8", weight: str = "int8"):
    """(row, col) implementations of the step: ``c[0:16] = step(c[0:16], a, b)``, each ``step`` returning the
    new int32x16 accumulator from the old one and the two operand buffers (shapes as ``_descriptions``)."""

    @T.prim_func(s_tir=True)
    def row_impl(a: T.Buffer((group,), data, offset_factor=1), b: T.Buffer((16, group), weight, offset_factor=1),
                 c: T.Buffer((16,), "int32", offset_factor=1)) -> None:
        with T.sblock("root"):
            T.reads(c[0:16], a[0:group], b[0:16, 0:group])
            T.writes(c[0:16])
            c[T.ramp(T.int32(0), 1, 16)] = row_step(c.vload([0], dtype="int32x16"), a, b)

    @T.prim_func(s_tir=True)
    def col_impl(a: T.Buffer((16, group), data, offset_factor=1), b: T.Buffer((group,), weight, offset_factor=1),
                 c: T.Buffer((16,), "int32", offset_factor=1)) -> None:
        with T.sblock("root"):
            T.reads(c[0:16], a[0:16, 0:group], b[0:group])
            T.writes(c[0:16])
            c[T.ramp(T.int32(0), 1, 16)] = col_step(c.vload([0], dtype="int32x16"), a, b)

    return row_impl, col_impl


def _vnni_dot(acc, data, weight):
    """One ``vpdpbusd``: 16 int32 lanes, each += 4 uint8 x int8 products (both int8x64 operands)."""
    return T.call_llvm_pure_intrin(T.llvm_lookup_intrinsic_id(_VPDPBUSD), acc, data, weight, dtype="int32x16")


def _repeated(four, dtype: str):
    """Four 8-bit values as one int32, repeated over 64 byte lanes."""
    return T.reinterpret(T.broadcast(T.reinterpret(four.vload([0], f"{dtype}x4"), dtype="int32"), 16),
                         dtype="int8x64")


_PMADDWD = "llvm.x86.avx2.pmadd.wd"


def _pair_descriptions():
    """What the AVX2 16x4 step computes: the same products as the 16x4 step, summed in two halves kept apart
    (``c[i, h] += sum_t a[2h + t] * b[i, 2h + t]``, row; ``c[i, h] += sum_t a[i, 2h + t] * b[2h + t]``, col);
    the write-back adds the halves (``rfactor``). The block's variables come in rfactor's order: h first."""

    @T.prim_func(s_tir=True)
    def row_desc(a: T.Buffer((4,), "uint8", offset_factor=1), b: T.Buffer((16, 4), "int8", offset_factor=1),
                 c: T.Buffer((16, 2), "int32", offset_factor=1)) -> None:
        with T.sblock("root"):
            T.reads(c[0:16, 0:2], a[0:4], b[0:16, 0:4])
            T.writes(c[0:16, 0:2])
            for i, h, t in T.grid(16, 2, 2):
                with T.sblock("update"):
                    vh, vi, vt = T.axis.remap("SSR", [h, i, t])
                    c[vi, vh] = c[vi, vh] + T.cast(a[vh * 2 + vt], "int32") * T.cast(b[vi, vh * 2 + vt], "int32")

    @T.prim_func(s_tir=True)
    def col_desc(a: T.Buffer((16, 4), "uint8", offset_factor=1), b: T.Buffer((4,), "int8", offset_factor=1),
                 c: T.Buffer((16, 2), "int32", offset_factor=1)) -> None:
        with T.sblock("root"):
            T.reads(c[0:16, 0:2], a[0:16, 0:4], b[0:4])
            T.writes(c[0:16, 0:2])
            for i, h, t in T.grid(16, 2, 2):
                with T.sblock("update"):
                    vh, vi, vt = T.axis.remap("SSR", [h, i, t])
                    c[vi, vh] = c[vi, vh] + T.cast(a[vi, vh * 2 + vt], "int32") * T.cast(b[vh * 2 + vt], "int32")

    return row_desc, col_desc


def _pair_implementations():
    """(row, col) AVX2 steps: the 16x4 operand widened to int16 in four chunks of 4 rows (``vpmovzxbw`` /
    ``vpmovsxbw``), the 4-element operand widened and repeated, four ``vpmaddwd``: each int32 lane gets the
    sum of two adjacent products, [i0h0 i0h1 i1h0 i1h1 ...], which is ``c``'s layout, so the 32 lanes add to
    the accumulator as they are. Exact: each lane adds two products of at most 255 * 128, unlike
    ``vpmaddubsw``, whose int16 sums saturate."""

    def step(acc, sixteen, four, sixteen_dtype: str, four_dtype: str):
        pair = T.reinterpret(T.broadcast(T.reinterpret(T.cast(four.vload([0], f"{four_dtype}x4"), "int16x4"),
                                                       dtype="int64"), 4), dtype="int16x16")
        products = [T.call_llvm_pure_intrin(T.llvm_lookup_intrinsic_id(_PMADDWD),
                                            T.cast(sixteen.vload([4 * j, 0], dtype=f"{sixteen_dtype}x16"),
                                                   "int16x16"), pair, dtype="int32x8") for j in range(4)]
        return acc + T.Shuffle(products, list(range(32)))

    @T.prim_func(s_tir=True)
    def row_impl(a: T.Buffer((4,), "uint8", offset_factor=1), b: T.Buffer((16, 4), "int8", offset_factor=1),
                 c: T.Buffer((16, 2), "int32", offset_factor=1)) -> None:
        with T.sblock("root"):
            T.reads(c[0:16, 0:2], a[0:4], b[0:16, 0:4])
            T.writes(c[0:16, 0:2])
            c[0, T.ramp(T.int32(0), 1, 32)] = step(c.vload([0, 0], dtype="int32x32"), b, a, "int8", "uint8")

    @T.prim_func(s_tir=True)
    def col_impl(a: T.Buffer((16, 4), "uint8", offset_factor=1), b: T.Buffer((4,), "int8", offset_factor=1),
                 c: T.Buffer((16, 2), "int32", offset_factor=1)) -> None:
        with T.sblock("root"):
            T.reads(c[0:16, 0:2], a[0:16, 0:4], b[0:4])
            T.writes(c[0:16, 0:2])
            c[0, T.ramp(T.int32(0), 1, 32)] = step(c.vload([0, 0], dtype="int32x32"), a, b, "uint8", "int8")

    return row_impl, col_impl


_PMADDWD_512 = "llvm.x86.avx512.pmaddw.d.512"


def _wide_intrinsics() -> dict:
    """The ``WIDE`` 16 x 2 steps on int16 operands, ``c[i] += a[k] * b[i, k]`` (row) and ``c[i] += a[i, k] *
    b[k]`` (col): the 16 x 2 operand as one vector, the pair repeated as one int32 over the lanes, then
    ``vpmaddwd`` (each int32 lane gets the sum of its two products) and an add; on zmm one instruction, on
    ymm two, each for 8 of the 16 lanes."""

    def step(acc, sixteen, pair, zmm: bool):
        repeated = lambda lanes: T.reinterpret(  # noqa: E731
            T.broadcast(T.reinterpret(pair.vload([0], "int16x2"), dtype="int32"), lanes),
            dtype=f"int16x{2 * lanes}")
        if zmm:
            return acc + T.call_llvm_pure_intrin(T.llvm_lookup_intrinsic_id(_PMADDWD_512),
                                                 sixteen.vload([0, 0], dtype="int16x32"), repeated(16),
                                                 dtype="int32x16")
        halves = [T.call_llvm_pure_intrin(T.llvm_lookup_intrinsic_id(_PMADDWD),
                                          sixteen.vload([8 * h, 0], dtype="int16x16"), repeated(8), dtype="int32x8")
                  for h in range(2)]
        return acc + T.Shuffle(halves, list(range(16)))

    descriptions, steps = _descriptions(2, "int16", "int16"), {}
    for zmm in (True, False):
        implementations = _implementations(lambda acc, a, b, zmm=zmm: step(acc, b, a, zmm),
                                           lambda acc, a, b, zmm=zmm: step(acc, a, b, zmm), 2, "int16", "int16")
        for name, desc, impl in zip(WIDE_STEPS[zmm], descriptions, implementations):
            steps[name] = (desc, impl)
    return steps


def _intrinsics() -> dict:
    """Every tensorized 16x4 step by name: (description, implementation)."""
    row_desc, col_desc = _descriptions()
    vnni_row, vnni_col = _implementations(
        lambda acc, a, b: _vnni_dot(acc, _repeated(a, "uint8"), b.vload([0, 0], dtype="int8x64")),
        lambda acc, a, b: _vnni_dot(acc, T.reinterpret(a.vload([0, 0], dtype="uint8x64"), dtype="int8x64"),
                                    _repeated(b, "int8")))
    (pair_row_desc, pair_col_desc), (avx2_row, avx2_col) = _pair_descriptions(), _pair_implementations()
    return {VNNI_ROW_INTRIN: (row_desc, vnni_row), VNNI_COL_INTRIN: (col_desc, vnni_col),
            AVX2_ROW_INTRIN: (pair_row_desc, avx2_row), AVX2_COL_INTRIN: (pair_col_desc, avx2_col)}


def _float_intrinsics() -> dict:
    """The float32 16 x 1 steps: ``c[i] += a * b[i]`` (row: lanes over the weight's columns, the activation
    broadcast) and ``c[i] += a[i] * b`` (col: lanes over the pixels, the weight broadcast), as one vector
    multiply and add that LLVM contracts into FMAs (``vfmadd231ps``; two ymm or one zmm per 16 lanes)."""

    @T.prim_func(s_tir=True)
    def row_desc(a: T.Buffer((1,), "float32", offset_factor=1), b: T.Buffer((16, 1), "float32", offset_factor=1),
                 c: T.Buffer((16,), "float32", offset_factor=1)) -> None:
        with T.sblock("root"):
            T.reads(c[0:16], a[0:1], b[0:16, 0:1])
            T.writes(c[0:16])
            for i, _k in T.grid(16, 1):  # the group loop of extent 1 binds no block variable
                with T.sblock("update"):
                    vi = T.axis.spatial(16, i)
                    c[vi] = c[vi] + a[0] * b[vi, 0]

    @T.prim_func(s_tir=True)
    def row_impl(a: T.Buffer((1,), "float32", offset_factor=1), b: T.Buffer((16, 1), "float32", offset_factor=1),
                 c: T.Buffer((16,), "float32", offset_factor=1)) -> None:
        with T.sblock("root"):
            T.reads(c[0:16], a[0:1], b[0:16, 0:1])
            T.writes(c[0:16])
            c[T.ramp(T.int32(0), 1, 16)] = (c.vload([0], dtype="float32x16")
                                            + T.broadcast(a[0], 16) * b.vload([0, 0], dtype="float32x16"))

    @T.prim_func(s_tir=True)
    def col_desc(a: T.Buffer((16, 1), "float32", offset_factor=1), b: T.Buffer((1,), "float32", offset_factor=1),
                 c: T.Buffer((16,), "float32", offset_factor=1)) -> None:
        with T.sblock("root"):
            T.reads(c[0:16], a[0:16, 0:1], b[0:1])
            T.writes(c[0:16])
            for i, _k in T.grid(16, 1):  # the group loop of extent 1 binds no block variable
                with T.sblock("update"):
                    vi = T.axis.spatial(16, i)
                    c[vi] = c[vi] + a[vi, 0] * b[0]

    @T.prim_func(s_tir=True)
    def col_impl(a: T.Buffer((16, 1), "float32", offset_factor=1), b: T.Buffer((1,), "float32", offset_factor=1),
                 c: T.Buffer((16,), "float32", offset_factor=1)) -> None:
        with T.sblock("root"):
            T.reads(c[0:16], a[0:16, 0:1], b[0:1])
            T.writes(c[0:16])
            c[T.ramp(T.int32(0), 1, 16)] = (c.vload([0], dtype="float32x16")
                                            + a.vload([0, 0], dtype="float32x16") * T.broadcast(b[0], 16))

    return {FP32_ROW_INTRIN: (row_desc, row_impl), FP32_COL_INTRIN: (col_desc, col_impl)}


def _group_update_intrinsics() -> dict:
    """The 16-lane update of a group-wise matmul's totals, ``c[i] += (a[j, i] >> 4) * b[j, i]`` (a: 16 x the
    group sums, as the nibbles unpack; b uint8) for one
    group j (the loop over groups outside): TIR vectorizes no loop of a reduction block, and left to LLVM
    the scalar update split the register tile into lanes, ``vpinsrd`` by ``vpinsrd``."""

    @T.prim_func(s_tir=True)
    def desc(a: T.Buffer((1, 16), "int32", offset_factor=1), b: T.Buffer((1, 16), "uint8", offset_factor=1),
             c: T.Buffer((16,), "int32", offset_factor=1)) -> None:
        with T.sblock("root"):
            T.reads(c[0:16], a[0:1, 0:16], b[0:1, 0:16])
            T.writes(c[0:16])
            for i in T.serial(16):
                with T.sblock("update"):
                    vi = T.axis.remap("S", [i])
                    c[vi] = c[vi] + T.shift_right(a[0, vi], SHIFT) * T.Cast("int32", b[0, vi])

    @T.prim_func(s_tir=True)
    def impl(a: T.Buffer((1, 16), "int32", offset_factor=1), b: T.Buffer((1, 16), "uint8", offset_factor=1),
             c: T.Buffer((16,), "int32", offset_factor=1)) -> None:
        with T.sblock("root"):
            T.reads(c[0:16], a[0:1, 0:16], b[0:1, 0:16])
            T.writes(c[0:16])
            c[T.ramp(T.int32(0), 1, 16)] = c.vload([0], dtype="int32x16") + T.shift_right(
                a.vload([0, 0], dtype="int32x16"), T.broadcast(T.int32(SHIFT), 16)) * T.Cast(
                "int32x16", b.vload([0, 0], dtype="uint8x16"))

    return {GROUP_UPDATE_INTRIN: (desc, impl)}


GROUP_UPDATE_INTRIN = "qc_int32_16_group_update"
FP32_ROW_INTRIN = "qc_fp32_16x1_lanes_from_weight"
FP32_COL_INTRIN = "qc_fp32_16x1_lanes_from_data"
FLOAT_STEPS = (FP32_ROW_INTRIN, FP32_COL_INTRIN)
"""The float32 16 x 1 steps of the matmul and of the convolution, on every x86 CPU."""
AVX2_ROW_INTRIN = "qc_avx2_16x4_lanes_from_weight"
AVX2_COL_INTRIN = "qc_avx2_16x4_lanes_from_data"
STEPS = {VNNI: (VNNI_ROW_INTRIN, VNNI_COL_INTRIN), AVX2: (AVX2_ROW_INTRIN, AVX2_COL_INTRIN), PLAIN: (None, None)}
WIDE_STEPS = {True: ("qc_wide_16x2_lanes_from_weight_zmm", "qc_wide_16x2_lanes_from_data_zmm"),
              False: ("qc_wide_16x2_lanes_from_weight_ymm", "qc_wide_16x2_lanes_from_data_ymm")}
"""The ``WIDE`` (matmul, conv) 16 x 2 steps on 512-bit (True) and 256-bit registers."""
PAIR_STEPS = (AVX2_ROW_INTRIN, AVX2_COL_INTRIN)
"""The steps that accumulate two half sums per lane (``_pair_descriptions``): their blocks are rfactored."""
"""Per instruction set, the tensorized 16x4 step of the matmul (lanes over columns) and of the convolution
(lanes over pixels); ``plain`` leaves the step to LLVM's loop vectorizer."""

_registered = False


def register_intrinsics() -> None:
    """Register the int8 16x4 steps (VNNI and AVX2) and the float32 16x1 steps with TVM (once per process)."""
    global _registered
    if _registered:
        return
    for name, (desc, impl) in {**_intrinsics(), **_wide_intrinsics(), **_float_intrinsics(),
                               **_group_update_intrinsics()}.items():
        try:
            TensorIntrin.register(name, desc, impl)
        except Exception:  # noqa: BLE001  (already registered by an earlier import of this module's copy)
            pass
    _registered = True


PACKINGS = (INT8, WIDE, FP32)
KINDS = ("matmul", "grouped", "conv", "depthwise", "maxpool")


def kernel_kind(sch: s_tir.Schedule) -> tuple[str, Packing] | None:
    """(``matmul`` / ``grouped`` / ``conv`` / ``depthwise`` / ``maxpool``, its packing) when the function holds
    a packed block, else None."""
    for packing in PACKINGS:
        for kind in KINDS:
            if _block_or_none(sch, packing.block(kind)) is not None:
                return kind, packing
    return None


def _block_or_none(sch: s_tir.Schedule, name: str):
    try:
        return sch.get_sblock(name)
    except Exception:  # noqa: BLE001  (TVM raises when no block has that name)
        return None


def is_packed_kernel(func: tvm.tirx.PrimFunc, packing: Packing | None = None) -> bool:
    """Whether ``func`` holds one of the packed blocks (of ``packing``, if given), which get a schedule here."""
    found = kernel_kind(s_tir.Schedule(tvm.IRModule({"main": func})))
    return found is not None and (packing is None or found[1] is packing)


def register_tile_extents(func: tvm.tirx.PrimFunc, target: tvm.target.Target) -> tuple[int, int] | None:
    """(rows, blocks of 16 lanes) that a register tile of ``func``'s packed int8 or float block divides
    (``fit_tile``), or None where no register tile applies: no packed matmul / conv, or one that runs on AMX
    tiles on ``target``."""
    sch = s_tir.Schedule(tvm.IRModule({"main": func}))
    found = kernel_kind(sch)
    if found is None or found[0] in ("depthwise", "maxpool"):
        return None
    kind, packing = found
    block = sch.get_sblock(packing.block(kind))
    if packing is INT8 and has_amx(target) and fits_tiles(sch, kind, block) is not None:
        return None
    if sch.get(block).annotations.get(IMPLICIT, 0):  # (pixels, channels, four reduction loops)
        pixels, channels, *_ = sch.get_loops(block)
        return _extent(sch, pixels), _extent(sch, channels) // LANES
    *rows, lanes, _ = sch.get_loops(block)
    return math.prod(_extent(sch, loop) for loop in rows), _extent(sch, lanes) // LANES


def schedule_packed_kernels(mod: tvm.IRModule, target: tvm.target.Target, knobs: Knobs | None = None,
                            choose: Callable[[tvm.tirx.PrimFunc], Knobs | None] | None = None) -> tvm.IRModule:
    """``mod`` with every packed kernel scheduled for ``target``'s instruction set (int8: VNNI, AVX2 or plain
    vector code; float32: vector FMAs); others untouched. ``choose`` may give a kernel its own tile (a
    tuning database's); else ``knobs``, else the instruction set's default."""
    isa, amx = instruction_set(target), has_amx(target)
    register_intrinsics()
    result = tvm.IRModule(dict(mod.functions), attrs=mod.attrs)
    for gvar, func in mod.functions.items():
        if not isinstance(func, tvm.tirx.PrimFunc):
            continue
        sch = s_tir.Schedule(tvm.IRModule({"main": func}))
        found = kernel_kind(sch)
        if found is None:
            continue
        kind, packing = found
        block = sch.get_sblock(packing.block(kind))
        if kind in ("depthwise", "maxpool") and is_taps_block(sch, block):
            schedule_depthwise_taps(sch, kind, block, _block_or_none(sch, packing.block("pad")), _write_back_at,
                                    native=_has_features(target, *TAPS_FEATURES))
        elif not (amx and packing is INT8 and _schedule_on_tiles(sch, kind, packing)):
            steps = (STEPS[isa] if packing is INT8 else WIDE_STEPS[has_avx512bw(target)] if packing is WIDE
                     else FLOAT_STEPS)
            tile = (choose(func) if choose else None) or knobs or default_knobs(target, packing)
            scattered = kind == "conv" and _writes_across_planes(sch, packing)
            SCHEDULES[kind](sch, packing, tile, steps)
            if scattered and _has_features(target, *TRANSPOSE_FEATURES):
                write_back = _block_or_none(sch, packing.block("conv") + "_global")
                if write_back is not None:
                    transpose_write_back(sch, write_back)
        result[gvar] = without_kernel_inits(sch.mod["main"]).with_attr("tirx.is_scheduled", True)
    return result


def _writes_across_planes(sch: s_tir.Schedule, packing: Packing) -> bool:
    """Whether the conv of ``sch`` has its output channels in the lanes (an implicit convolution, or
    ``packed_layouts.channel_lanes``): its write-back stores each vector across the NCHW channel planes
    (``x86_transpose`` moves 8-bit ones through byte permutes where the CPU has VBMI)."""
    block = sch.get(sch.get_sblock(packing.block("conv")))
    return bool(block.annotations.get(CHANNEL_LANES, 0) or block.annotations.get(IMPLICIT, 0))


def schedule_matmul(sch: s_tir.Schedule, packing: Packing, knobs: Knobs, steps: tuple) -> None:
    """Tile the matmul into register blocks of rows x (blocks x 16) columns, reduce in groups of g (a 4-bit
    weight unpacked inside the tile, two groups per load)."""
    widen = _block_or_none(sch, packing.block("widen"))  # WIDE: the activations to int16, once
    if widen is not None:
        *outer, inner = sch.get_loops(widen)
        if outer:
            sch.parallel(sch.fuse(*outer))
        sch.vectorize(sch.split(inner, [None, math.gcd(_extent(sch, inner), 64)])[1])
    activations = _schedule_activation_stages(sch, packing)
    block = sch.get_sblock(packing.block("matmul"))
    loops = sch.get_loops(block)
    *rows, col, red = loops
    lead = ()
    if activations:  # the operand packed per leading index (head): those loops go outside the tiles
        *lead, rows = rows
        rows = [rows]
    row = sch.fuse(*rows) if len(rows) > 1 else rows[0]
    unpack = _block_or_none(sch, packing.block("unpack"))
    _tile(sch, block, row, col, red, packing.group, knobs, steps[0], unpack=unpack, lead=tuple(lead),
          vectors=True)


GROUPED_KNOBS = Knobs(4, 3)
"""The tile of a group-wise matmul: its group sums and its totals both stay in registers (2 x 12 zmm)."""


def schedule_grouped_matmul(sch: s_tir.Schedule, packing: Packing, knobs: Knobs, steps: tuple) -> None:
    """A group-wise 4-bit matmul (``packed_layouts.matmul_grouped``): register tiles of rows x (blocks x 16)
    columns as the matmul's, the loop over weight groups outside the tile; per group the tile's group sums
    (``group_sum``: the VNNI steps over the nibbles, unpacked two groups per load) and then, per accumulator,
    one shift, multiply and add into the totals, which stay in registers across the groups. Both must fit:
    ``knobs`` where they have at most 12 accumulators, else ``GROUPED_KNOBS``."""
    block, sums = sch.get_sblock(packing.block("grouped")), sch.get_sblock(packing.block("group_sum"))
    unpack = sch.get_sblock(packing.block("unpack"))
    *rows, col, across = sch.get_loops(block)
    row = sch.fuse(*rows) if len(rows) > 1 else rows[0]
    limit = knobs if knobs.rows * knobs.blocks <= GROUPED_KNOBS.rows * GROUPED_KNOBS.blocks else GROUPED_KNOBS
    tile_rows, tile_blocks = fit_tile(limit, _extent(sch, row), _extent(sch, col) // LANES)
    ro, ri = sch.split(row, [None, tile_rows])
    lo, lb, li = sch.split(col, [None, tile_blocks, LANES])
    sch.reorder(ro, lo, across, ri, lb, li)
    _write_back_at(sch, block, lo, vectors=True)
    sch.parallel(sch.fuse(ro, lo))
    sch.compute_at(sums, across)
    loops = sch.get_loops(sums)
    inner = loops[[sch.get(loop).same_as(sch.get(across)) for loop in loops].index(True) + 1:]
    *sum_rows, sum_cols, within = inner  # (rows, unless the tile has one; columns; the group's rows)
    sb, sl = sch.split(sum_cols, [None, LANES])
    go, gi = sch.split(within, [None, packing.group])
    sch.reorder(go, *sum_rows, sb, sl, gi)
    unrolled = [*sum_rows, sb]
    go = _unpack_in_tile(sch, unpack, go, unrolled)
    init = sch.decompose_reduction(sums, go)
    sch.vectorize(sch.get_loops(init)[-1])
    for loop in unrolled:
        sch.unroll(loop)
    if steps[0] is not None:
        sch.tensorize(sl, steps[0])
    else:
        sch.reorder(gi, sl)
        sch.unroll(gi)
    total = sch.decompose_reduction(block, across)
    sch.vectorize(sch.get_loops(total)[-1])
    sch.unroll(ri)
    sch.unroll(lb)
    sch.tensorize(li, GROUP_UPDATE_INTRIN)


def _schedule_activation_stages(sch: s_tir.Schedule, packing: Packing) -> bool:
    """The stages of a matmul of two activations (``packed_layouts.matmul_activations``), if it has them, at
    the kernel's root: the second operand packed (parallel over its column blocks, a vector of 16 columns x 4
    per step) and the row and column sums (parallel over the sums). False where the kernel has none."""
    pack = _block_or_none(sch, packing.block("pack"))
    if pack is None:
        return False
    *outer, _, lanes, within = sch.get_loops(pack)
    sch.parallel(sch.fuse(*outer))
    sch.vectorize(sch.fuse(lanes, within))
    for role in ("row_sum", "column_sum"):  # absent where its zero-point factor is 0 (probabilities: za = 0)
        sums = _block_or_none(sch, packing.block(role))
        if sums is not None:
            *spatial, _ = sch.get_loops(sums)
            sch.parallel(sch.fuse(*spatial) if len(spatial) > 1 else spatial[0])
    return True


def schedule_conv(sch: s_tir.Schedule, packing: Packing, knobs: Knobs, steps: tuple) -> None:
    """im2col (parallel, vectorized; an implicit convolution's interleaved image instead, ``_schedule_image``;
    none for a float pointwise convolution, ``is_pointwise_float``), then the conv block tiled like the matmul
    with pixels in the lanes (a
    4-bit weight unpacked first, once per call: the broadcast operand), or, where the layout put the output
    channels in the lanes (``packed_layouts.channel_lanes``), exactly as the matmul: rows of pixels, each
    step four im2col bytes broadcast against 64 weight bytes (a 4-bit weight unpacked in the tile, two
    groups per load); the write-back then stores each channel vector across the output's channel planes."""
    image = _block_or_none(sch, packing.block("image"))
    pointwise = image is None and is_pointwise_float(sch, packing)
    if image is not None:
        _schedule_image(sch, image)
    elif not pointwise:
        _schedule_im2col(sch, packing)
    block = sch.get_sblock(packing.block("conv"))
    if image is not None:
        _tile_implicit(sch, block, knobs, steps[0], _block_or_none(sch, packing.block("unpack")))
        return
    if is_by_channels(sch, packing):  # a 4-bit weight unpacked in the tile, as the matmul's
        if pointwise:  # each step broadcasts the image's own element: a vector FMA LLVM makes of the lane loop
            sch.compute_inline(sch.get_sblock(packing.block("im2col")))  # (tensorize cannot match a 4-d read)
        pix, out, red = sch.get_loops(block)
        tile = channel_tile(knobs, _extent(sch, pix), _extent(sch, out) // LANES)
        _tile(sch, block, pix, out, red, packing.group, tile, None if pointwise else steps[0], lanes_outer=True,
              strip=False, unpack=_block_or_none(sch, packing.block("unpack")))
        return
    _schedule_unpack(sch, packing)
    out, pix, red = sch.get_loops(block)
    if pointwise:  # each strip the tiles read copied from the image itself
        _tile(sch, block, out, pix, red, packing.group, knobs, steps[1], lanes_outer=True)
        sch.compute_inline(sch.get_sblock(packing.block("im2col")))
        return
    _tile(sch, block, out, pix, red, packing.group, knobs, steps[1], lanes_outer=im2col_exceeds_cache(sch, packing))


def is_pointwise_float(sch: s_tir.Schedule, packing: Packing) -> bool:
    """Whether ``sch`` holds a float32 pointwise convolution (1x1, stride 1, unpadded: no ``pad`` block),
    whose im2col would be a copy of the image. Pixels in the lanes, the strips the tiles read are copied from
    the image itself; channels in the lanes, each step broadcasts the image's element. EfficientNet-Lite0's
    layers alone (best of 5 alternating rounds, identical outputs, 2026-12-07): its eight pixel-lane ones
    1.63 -> 0.95 ms summed (16 -> 96 at 112x112 0.81x, 144 -> 24 at 56x56 0.38x), its eleven channel-lane
    ones at 14x14 and 7x7 0.32-0.89x (1152 -> 192 at 7x7 0.33x). (An int8 im2col interleaves four
    channels: a transform, kept.)"""
    return packing is FP32 and _block_or_none(sch, packing.block("pad")) is None


CHANNEL_TILE_ACCUMULATORS = 16
"""Accumulators of a channels-in-lanes tile: 7 pixels x 2 channel vectors measured 0.80-0.90x the pixel
layout's time on 7x7 and 14x14 outputs, 7 x 4 (28) 1.5-2.1x (``packed_layouts.CHANNEL_LANES_MIN_REDUCTION``)."""


def channel_tile(knobs: Knobs, rows: int, blocks: int) -> Knobs:
    """The register tile of a conv with its output channels in the lanes, over ``rows`` pixels and ``blocks``
    channel vectors: ``knobs`` where they divide both with at least ``CHANNEL_TILE_ROWS[0]`` rows, else the
    most pixel rows (a divisor, at most ``CHANNEL_TILE_ROWS[1]``) times the most channel vectors that divide
    ``blocks`` within ``CHANNEL_TILE_ACCUMULATORS``."""
    low, high = CHANNEL_TILE_ROWS
    if rows % knobs.rows == 0 and blocks % knobs.blocks == 0 and knobs.rows >= low:
        return knobs
    r = max(d for d in range(1, min(rows, high) + 1) if rows % d == 0)
    budget = max(r, CHANNEL_TILE_ACCUMULATORS)
    return Knobs(r, max(b for b in range(1, blocks + 1) if blocks % b == 0 and r * b <= budget))


def is_by_channels(sch: s_tir.Schedule, packing: Packing) -> bool:
    """Whether the packed conv block of ``sch`` has its output channels in the lanes."""
    return bool(sch.get(sch.get_sblock(packing.block("conv"))).annotations.get(CHANNEL_LANES, 0))


def _schedule_unpack(sch: s_tir.Schedule, packing: Packing) -> None:
    """A 4-bit weight's ``unpack`` block (``passes.int4``), if the kernel has one, at the kernel's root: the
    whole int8 weight (16 w) once per call, parallel over its rows, vectorized along them."""
    unpack = _block_or_none(sch, packing.block("unpack"))
    if unpack is None:
        return
    first, *middle, last = sch.get_loops(unpack)
    if middle:  # matmul [N/16, K/4, 16, 4]: the 64 bytes of one group of 16 columns in the lanes
        sch.parallel(sch.fuse(first, middle[0]))
        sch.vectorize(sch.fuse(*middle[1:], last))
        return
    sch.parallel(first)  # conv [O, R']: a vector per block of nibble pairs
    sch.vectorize(sch.split(last, [None, conv_nibble_block(_extent(sch, last))])[1])


def _unpack_in_tile(sch: s_tir.Schedule, unpack, reduction, unrolled: list):
    """Unpack a matmul weight inside the register tile, where each step's operand is made: a 4-bit weight
    (``passes.int4``) two groups at a time, ``reduction`` (the loop over groups) split into pairs so each
    load of the tile's weight becomes the operands of both (three ALU ops per load); an int8 weight of the
    ``WIDE`` kernels widened to int16 (one ``vpmovsxbw``). Returns the loop the tile's reduction now starts
    at; a pair loop joins ``unrolled``."""
    if sch.get(unpack).annotations.get(NIBBLES):
        reduction, pair = sch.split(reduction, [None, 2])
        unrolled.append(pair)
    _operands_at(sch, unpack, reduction)
    return reduction


def _operands_at(sch: s_tir.Schedule, unpack, loop) -> None:
    """The ``unpack`` block computed under ``loop`` for the steps inside it: its (16 lanes x group) bytes
    one vector, its other loops (blocks, pairs) unrolled."""
    sch.compute_at(unpack, loop)
    loops = sch.get_loops(unpack)
    *blocks, lanes, group = loops[[sch.get(outer).same_as(sch.get(loop)) for outer in loops].index(True) + 1:]
    sch.vectorize(sch.fuse(lanes, group))
    for outer in blocks:
        sch.unroll(outer)


def _schedule_im2col(sch: s_tir.Schedule, packing: Packing) -> None:
    """The conv's padded image and im2col stages: parallel over channels / reduction groups, vectorized."""
    pad = _block_or_none(sch, packing.block("pad"))  # flat padded image (none for a pointwise convolution): split back
    if pad is not None:  # into (channel, row, column), which makes its div/mod vanish
        channel, _, _ = sch.split(sch.get_loops(pad)[0], _image_shape(sch, pad))
        sch.parallel(channel)
    im2col = sch.get_sblock(packing.block("im2col"))
    r4, pixel, t = sch.get_loops(im2col)
    sch.split(pixel, [None, int(sch.get(im2col).annotations[OUTPUT_WIDTH])])  # p -> (row, column): no division
    sch.parallel(r4)
    sch.unroll(t)  # g elements per pixel, interleaved: LLVM vectorizes the column loop around them


IMPLICIT_KNOBS = Knobs(7, 2)
"""The untuned tile of an implicit convolution: 7 pixels x 2 channel vectors. ResNet-18's kernels alone with
their requantize (2026-12-07, znver4), time against the im2col kernel's: 7x2 0.84-0.99 on its 3x3 convs at
56x56 to 7x7, 8x2 0.86-1.04, 4x4 about as 8x2, 7x4 (28 accumulators, 7 broadcasts, 4 weight vectors: more
than 32 registers) 1.02-2.10."""


def _tile_implicit(sch: s_tir.Schedule, block, knobs: Knobs, intrin: str | None, unpack=None) -> None:
    """An implicit convolution's register tile: pixel rows x channel vectors (``channel_tile`` of
    ``IMPLICIT_KNOBS`` unless a tuned tile is given), the
    reduction's channel groups and filter rows and columns outside the tile (each step's image and weight
    addresses affine in them), its four channels the step's group; tiles strip of channels by strip. A 4-bit
    weight's pair of channel groups runs inside the taps, outside the tile, and its ``unpack`` block at the
    tap: each weight load of a tap becomes the operands of both groups."""
    pixels, channels, groups, rows, columns, *pair, group = sch.get_loops(block)
    tile = channel_tile(IMPLICIT_KNOBS if knobs == DEFAULT_KNOBS else knobs, _extent(sch, pixels),
                        _extent(sch, channels) // LANES)
    final, step = None, [group]
    if intrin in PAIR_STEPS:  # AVX2: two half sums per lane, the half a dimension of its own (as ``_tile``)
        half, _ = sch.split(group, [2, None])
        final, block = block, sch.rfactor(half, factor_axis=len(sch.get(block).writes[0].region))
        pixels, channels, groups, rows, columns, *pair, half, halves = sch.get_loops(block)[-7 - len(pair):]
        step = [half, halves]
    po, pi = sch.split(pixels, [None, tile.rows])
    co, cb, lanes = sch.split(channels, [None, tile.blocks, LANES])
    sch.reorder(co, po, groups, rows, columns, *pair, pi, cb, lanes, *step)
    if unpack is not None:
        _operands_at(sch, unpack, columns)
    _finish(sch, block, final, outer=(co, po), reduction=groups, unrolled=[*pair, pi, cb], lanes=lanes,
            group=step[-1], intrin=intrin)


def _schedule_image(sch: s_tir.Schedule, image) -> None:
    """An implicit convolution's interleaved padded image ([C/4, rows, columns, 4]): parallel over channel
    groups and rows, the four channels of a column unrolled (LLVM interleaves the four row loads it reads
    into the stores), the padding columns split off the copy (``LoopPartition``, hinted)."""
    groups, rows, columns, channels = sch.get_loops(image)
    sch.parallel(sch.fuse(groups, rows))
    sch.unroll(channels)
    sch.annotate(columns, "pragma_loop_partition_hint", True)


CACHED_IM2COL_BYTES = 1 << 18
"""An im2col up to this size stays in cache while every row tile of output channels reads it, so the tiles
run channel tile by channel tile (each writes whole output rows); a larger one is read one strip of pixels at a
time by every channel tile (``lanes_outer``), the vector schedules first copying the strip into a contiguous
buffer (``_copy_strip``): ResNet-18 fp32 35.8 -> 19.2 ms (strips) -> 18.0 ms (copied), int8 3.87 -> 3.54 ms
(Sapphire Rapids, 2 MiB L2 a core, at 1 MiB). At 1 MiB on this znver4 (1 MiB L2 a core) the ``haswell``
build's 7x7 and 14x14 convs (int16 im2col of 590 and 958 KB) ran at 50-59% of its peak; at 256 KiB, 58-73%,
the whole model 0.92x, EfficientNet-Lite0 W8A8 on VNNI (its 351 KB stem im2col now in strips) 0.98-0.99x
(artifacts alternating in one process, 2026-12-07)."""


def im2col_exceeds_cache(sch: s_tir.Schedule, packing: Packing) -> bool:
    """Whether the convolution's im2col buffer is larger than ``CACHED_IM2COL_BYTES``."""
    region = sch.get(sch.get_sblock(packing.block("im2col"))).writes[0]
    return _elements(region) * region.source.dtype.bits // 8 > CACHED_IM2COL_BYTES


def _tile(sch, block, rows, lanes, reduction, group: int, knobs: Knobs, intrin: str | None,
          lanes_outer: bool = False, unpack=None, strip: bool | None = None, lead: tuple = (),
          vectors: bool = False) -> None:
    """Split ``rows`` by the tile's rows, ``lanes`` into blocks of 16 and ``reduction`` into groups of
    ``group``, order them tile by tile (rows, lane blocks, reduction outside; the 16 x g step inside), then
    finish. For a pair step the reduction splits into (groups, half, pair) and ``rfactor`` makes the half a
    dimension of its own: the tile accumulates two partial sums per lane and the write-back adds them.
    ``lanes_outer`` runs the tiles lane block by lane block (all row tiles of one strip of lanes together),
    each strip first copied contiguous unless ``strip`` is False;
    ``unpack``, a 4-bit weight's unpack block, is computed inside the tile (``_unpack_in_tile``); ``lead``,
    loops outside ``rows`` (a matmul of activations' heads), join the tiles' parallel loop."""
    final = None
    if intrin in PAIR_STEPS:
        go, half, gi = sch.split(reduction, [None, 2, group // 2])
        final, block = block, sch.rfactor(half, factor_axis=len(sch.get(block).writes[0].region))
        rows, lanes, go, half, gi = sch.get_loops(block)[-5:]
    tile_rows, tile_blocks = fit_tile(knobs, _extent(sch, rows), _extent(sch, lanes) // LANES)
    ro, ri = sch.split(rows, [None, tile_rows])
    lo, lb, li = sch.split(lanes, [None, tile_blocks, LANES])
    if final is not None:
        sch.reorder(ro, lo, go, ri, lb, li, half, gi)
    else:  # float32: group 1, a loop of extent 1 that the float step's description expects
        go, gi = sch.split(reduction, [None, group])
        sch.reorder(ro, lo, go, ri, lb, li, gi)
    outer = (lo, ro) if lanes_outer else (ro, lo)
    sch.reorder(*outer)
    unrolled = [ri, lb]
    if unpack is not None:
        go = _unpack_in_tile(sch, unpack, go, unrolled)
    _finish(sch, block, final, outer=outer, reduction=go, unrolled=unrolled, lanes=li, group=gi, intrin=intrin,
            strip=lanes_outer if strip is None else strip, lead=lead, vectors=vectors)


DEPTHWISE_ROWS = (8, 2)   # at most this many output rows accumulated together: rows of one vector, wider
DEPTHWISE_REGISTERS = 30  # of the 32 vector registers: accumulators, the input vectors they share, weights


def depthwise_rows(rows: int, vectors: int, kernel: int, stride: int) -> int:
    """Output rows of a depthwise layer accumulated together: the most (dividing ``rows``, at most
    ``DEPTHWISE_ROWS``) whose accumulators, shared input rows (``vectors`` per row) and one filter column of
    weights fit in registers."""
    def registers(r: int) -> int:
        return r * vectors + ((r - 1) * stride + kernel) * vectors + kernel

    most = DEPTHWISE_ROWS[0] if vectors == 1 else DEPTHWISE_ROWS[1]
    return max(r for r in range(1, most + 1) if rows % r == 0 and (r == 1 or registers(r) <= DEPTHWISE_REGISTERS))


def schedule_depthwise(sch: s_tir.Schedule, packing: Packing, knobs: Knobs, steps: tuple) -> None:
    """Tiles of output rows (``depthwise_rows``) with the columns in vector lanes, accumulated filter column
    by filter column: within a column the tile's rows share their input rows, each loaded and widened once
    for every tap that reads it (filter rows and tile rows unrolled; the columns stay a loop, so the live
    vectors fit in registers). Where a row fits one vector, one channel per task (its weights and epilogue
    constants loaded once, its padding made in the task, in L1), else one tile per task. Lite0's 5x5 layers
    standalone: at 7x7, 1152 channels, 92 -> 63 us; at 14x14, 672 channels, 101 -> 73 us (against one row
    per step, tap by tap, before)."""
    pad = _block_or_none(sch, packing.block("pad"))
    block = sch.get_sblock(packing.block("depthwise"))
    batch, channel, row, col, i, j = sch.get_loops(block)
    vectors = -(-_extent(sch, col) // LANES)
    stride = int(sch.get(block).annotations[ROW_STRIDE])
    rows = depthwise_rows(_extent(sch, row), vectors, _extent(sch, i), stride)
    tile, row = sch.split(row, [None, rows])
    # one row alone shares nothing: tap by tap, all unrolled (filter column by column, it was slower: the
    # 112-wide 3x3 layer 122 -> 151 us)
    first = i if rows == 1 else j
    sch.reorder(tile, *((i, j) if rows == 1 else (j, i)), row, col)
    if vectors == 1:
        outer = sch.fuse(batch, channel)
        _write_back_at(sch, block, tile)
        if pad is not None:
            sch.compute_at(pad, outer)
    else:
        outer = sch.fuse(batch, channel, tile)
        _write_back_at(sch, block, outer)
        if pad is not None:
            sch.parallel(sch.fuse(*sch.get_loops(pad)[:2]))
    sch.parallel(outer)
    sch.vectorize(col)  # consecutive columns (stride 1, or a phase of a strided row); before
    # decompose_reduction, while the block has its init, as TIR requires
    init = sch.decompose_reduction(block, first)
    sch.vectorize(sch.get_loops(init)[-1])
    for loop in (i, row, j) if rows == 1 else (i, row):
        sch.unroll(loop)


def _schedule_on_tiles(sch: s_tir.Schedule, kind: str, packing: Packing) -> bool:
    """An int8 matmul or convolution on AMX tiles (``backends.x86_amx``) where its shape fits; False leaves
    ``sch`` for the vector schedules."""
    # a weight unpacked at the root is split between the threads by column blocks: the tiles then go column
    # block by column block too, so each thread reads what it unpacked (row tiles first: 128x768x768 4-bit
    # 89 us against 47 us at 8 bits, the unpacked halves crossing between cores; so: 53 us)
    unpacks = _block_or_none(sch, packing.block("unpack")) is not None
    if _block_or_none(sch, packing.block("pack")) is not None:  # a matmul of activations: its stages want
        return False  # the vector schedule (``_schedule_activation_stages``)
    if kind == "matmul" and schedule_amx(sch, kind, packing.block(kind), _write_back_at, lanes_outer=unpacks):
        _schedule_unpack(sch, packing)
        return True
    if kind == "conv" and not is_by_channels(sch, packing) and schedule_amx(
            sch, kind, packing.block(kind), _write_back_at, lanes_outer=im2col_exceeds_cache(sch, packing)):
        _schedule_im2col(sch, packing)
        _schedule_unpack(sch, packing)
        return True
    return False


SCHEDULES = {"matmul": schedule_matmul, "grouped": schedule_grouped_matmul, "conv": schedule_conv,
             "depthwise": schedule_depthwise}


def _finish(sch, block, final, *, outer, reduction, unrolled, lanes, group, intrin, strip=False, lead=(),
            vectors=False) -> None:
    """Accumulate the tile in a small buffer (registers after LLVM), write it back through the epilogue
    (after ``final`` adds the half sums of a pair step), run the tiles in parallel (with ``strip``, the strips
    of pixels, each first copied contiguous: ``_copy_strip``), and tensorize the 16 x g
    step (plain int8: the four products unrolled and the 16 lanes innermost, for LLVM's loop vectorizer;
    TIR will not vectorize a spatial loop that encloses a reduction)."""
    if final is not None:
        sch.reverse_compute_at(final, outer[1])
    _write_back_at(sch, final if final is not None else block, outer[1], vectors)
    if strip:
        _copy_strip(sch, block, outer[0])
        sch.parallel(outer[0])
    else:
        sch.parallel(sch.fuse(*lead, *outer))
    init = sch.decompose_reduction(block, reduction)
    init_loops = sch.get_loops(init)
    sch.vectorize(sch.fuse(*init_loops[-2:]) if final is not None else init_loops[-1])  # 16 lanes (x 2 halves)
    for loop in unrolled:
        sch.unroll(loop)
    if intrin is not None:
        sch.tensorize(lanes, intrin)
    else:
        sch.reorder(group, lanes)
        sch.unroll(group)


def _copy_strip(sch, block, loop) -> None:
    """Copy the strip of im2col that one iteration of ``loop`` reads into a contiguous buffer first, so the
    tiles read it as one stream instead of one row of the whole im2col per reduction step."""
    index = next(i for i, region in enumerate(sch.get(block).reads) if "im2col" in region.source.name)
    strip = sch.cache_read(block, index, "global")
    sch.compute_at(strip, loop)
    *_, groups, pixels = sch.get_loops(strip)[-3:]  # (reduction groups, the strip's pixels x group)
    sch.vectorize(pixels if _extent(sch, groups) > 256 // _extent(sch, pixels) else sch.fuse(groups, pixels))


def _write_back_at(sch, block, loop, vectors: bool = False) -> None:
    """Accumulate ``block``'s output for one iteration of ``loop`` in a small buffer (``global`` scope and
    constant-sized: under 1 KiB a stack array LLVM keeps in registers, else a heap workspace allocated once
    per parallel task by ``task_buffers``; TVM 0.27 makes ``local`` buffers heap workspaces),
    and write it back at the end of that iteration through the epilogue fusion put after ``block``,
    vectorized; where a step is not elementwise over the tile (a padding for the next layer), the write-back
    ends before it (writing the narrow result, not the int32 accumulators) and the rest runs after.

    Where the tile is padded past the output (pixels or columns rounded up to 16), the write-back is guarded
    by ``p < P``. TVM cannot vectorize a guarded loop (it scalarizes it) and LLVM if-converts the guarded
    store into masked stores; where the bound is a constant, LLVM 22 lowered a one-lane masked int64 -> uint8
    store as an 8-byte ``vmovq``: seven zero bytes over the next channel's first pixels (another thread's)
    or past the output's end. So that loop is left to TIR's ``LoopPartition`` (hinted), which splits it at a
    constant bound, leaving LLVM a plain loop; a bound that moves with the tile keeps its runtime masks
    (``tests/test_int8_kernels.py::test_requantized_write_back_is_exact_and_stays_inside_its_output``)."""
    chain = _consumer_chain(sch, block)
    _inline_side_inputs(sch, keep={sch.get(b).name_hint for b in chain})
    accumulated = _elements(sch.get(block).writes[0])
    tile = sch.cache_write(block, 0, "global")
    sch.reverse_compute_at(tile, loop)
    for k, consumer in enumerate(chain):  # each elementwise step into the write-back, as far as they go
        try:
            sch.reverse_compute_inline(consumer)
        except Exception:  # noqa: BLE001  (not elementwise over the tile, e.g. a padding: the rest runs after,
            _parallel_vectorized(sch, _inline_chain(sch, chain[k:]))  # over the narrow result)
            break
    lanes = sch.get_loops(tile)[-1]
    if accumulated > _elements(sch.get(tile).writes[0]) and _extent(sch, lanes) > LANES:
        # the tile holds every pixel block: a constant bound. Unrolled, TIR drops the stores past it and
        # LLVM's SLP vectorizer packs the rest without masks (left a loop, LLVM 22 vectorized its one-pixel
        # tail of 49 as an 8-byte store again: seven zeros over the next channel, another thread's,
        # MobileNetV3-Small's 1x1 96->576 at 7x7, caught by the oracle)
        sch.unroll(lanes)
    elif accumulated > _elements(sch.get(tile).writes[0]):
        sch.annotate(lanes, "pragma_loop_partition_hint", True)
    elif vectors and _extent(sch, lanes) > LANES and _extent(sch, lanes) % LANES == 0:
        # ``vectors`` (a matmul's tile): one vector of 16 lanes at a time. LLVM 22 scalarized a 48-lane
        # write-back (a register tile of three blocks), loading each per-channel constant of the requantize
        # alone and rebuilding the vectors with vpinsrd (MiniLM's FFN matmul: 0.29 ms against 0.13 for the
        # same products without the epilogue)
        blocks, vector = sch.split(lanes, [None, LANES])
        sch.unroll(blocks)
        sch.vectorize(vector)
    else:
        sch.vectorize(lanes)


def _elements(region) -> int:
    return math.prod(int(d) for d in region.source.shape)


def _inline_side_inputs(sch, keep: set[str]) -> None:
    """Inline the elementwise blocks that feed the epilogue from outside the packed blocks (a residual
    input's requantize: cast, multiply, add, shift) into their consumers, so the write-back computes them
    per element instead of serial passes over whole int64 buffers before it."""
    root = sch.get_sblock("root") if _block_or_none(sch, "root") is not None else None
    blocks = sch.get_child_blocks(root) if root is not None else []
    for candidate in blocks:
        name = sch.get(candidate).name_hint
        if name.startswith("qc_") or name in keep or not sch.get_consumers(candidate):
            continue
        try:
            sch.compute_inline(candidate)
        except Exception:  # noqa: BLE001  (not injective, or feeds more than elementwise code: left as is)
            pass


def _consumer_chain(sch, block) -> list:
    """The blocks after ``block`` that each have one consumer: the epilogue fusion put in the kernel."""
    chain, consumers = [], sch.get_consumers(block)
    while len(consumers) == 1:
        chain.append(consumers[0])
        consumers = sch.get_consumers(consumers[0])
    return chain


def _inline_chain(sch, chain: list):
    """Inline the blocks of ``chain`` into the last one that takes them and return that block."""
    for current in chain[:-1]:
        try:
            sch.compute_inline(current)
        except Exception:  # noqa: BLE001  (not injective: the epilogue ends here, the rest stays as it is)
            return current
    return chain[-1]


def _parallel_vectorized(sch, block) -> None:
    """A standalone elementwise block: its outer loops in parallel, its innermost loop in vector lanes."""
    loops = sch.get_loops(block)
    if len(loops) > 1:
        sch.parallel(sch.fuse(*loops[:-1]) if len(loops) > 2 else loops[0])
    try:
        sch.vectorize(loops[-1])
    except Exception:  # noqa: BLE001  (left to LLVM's loop vectorizer)
        pass


def _image_shape(sch, pad_block) -> list[int]:
    """(channels, padded height, padded width) of a flat ``pad`` stage (its block annotation)."""
    return [int(v) for v in sch.get(pad_block).annotations[IMAGE_SHAPE]]


def _extent(sch, loop) -> int:
    return int(sch.get(loop).extent)


def fit_tile(knobs: Knobs, rows: int, blocks: int) -> tuple[int, int]:
    """The register tile used on a kernel of ``rows`` x ``blocks`` lane blocks: ``knobs`` when it divides
    both, else the dividing tile with the most accumulators within ``knobs``' count, nearest ``knobs`` in
    shape. (A tile must divide the loops: a ragged edge would put bounds tests inside the step.) E.g. 2x3 on
    28x28 pixels (49 blocks) and 128 channels becomes 4x1, not 2x1."""
    budget = knobs.rows * knobs.blocks
    tiles = [(r, b) for r in range(1, min(rows, budget) + 1) if rows % r == 0
             for b in range(1, min(blocks, budget // r) + 1) if blocks % b == 0]
    return max(tiles, key=lambda t: (t[0] * t[1], -abs(t[0] - knobs.rows) - abs(t[1] - knobs.blocks)))


def build_kernel(func: tvm.tirx.PrimFunc, target: tvm.target.Target, knobs: Knobs | None = None):
    """Schedule and compile one standalone kernel (a PrimFunc made from ``packed_layouts``' computes), for
    microbenchmarks and tests; returns the built module (``inspect_source("asm")`` shows its code)."""
    from .x86_high_product import tir_pipeline

    scheduled = schedule_packed_kernels(tvm.IRModule({"main": func}), target, knobs)
    return tvm.compile(scheduled, target=target, tir_pipeline=tir_pipeline(target))
