"""Transposing write-back for x86 with AVX-512 VBMI: a register tile with its channels in the lanes, written
to (and its residual read from) NCHW through byte permutes instead of one byte per instruction.

A tile of ``P`` output pixels (consecutive, in one output row) x ``C`` channels computes its epilogue with the
channels in the vector lanes, so in NCHW each of its result vectors is ``C`` bytes of one pixel, one in
each channel plane: LLVM stores them one ``vpextrb`` at a time (``C`` per pixel) and gathers a residual
input one ``vpinsrb`` at a time. Here the epilogue writes its bytes pixel-major into a small buffer of the
tile (``P x C`` bytes, in L1), and a generated kernel moves them: ``vpermi2b`` (two 64-byte tables) puts
four channels' ``P`` bytes in the four 16-byte lanes of a vector, and each lane is one store of ``P``
bytes under a mask (``vmovdqu8``) into its channel's row. A residual comes in the other way: one masked
16-byte load per channel, four to a vector, permuted into the pixel-major buffer the epilogue reads.
Per tile of 7 x 32: 16 permutes and 32 masked stores instead of 224 byte extracts and stores.

Numerics: none (bytes moved, not changed).
"""

from __future__ import annotations

from dataclasses import dataclass

import tvm
from tvm import s_tir
from tvm.s_tir import TensorIntrin
from tvm.script import tirx as T
from tvm.script.ir_builder import IRBuilder
from tvm.script.ir_builder.tirx import prim_func as build_prim_func

from .x86_depthwise import masked_load, masked_store

TRANSPOSE_FEATURES = ("avx512bw", "avx512vbmi")
"""What the kernels need: byte-masked loads and stores, and ``vpermi2b``."""

DTYPES = ("uint8",)  # the activations lower_integer makes (tested); int8 would move the same bytes
LANE_BYTES = 16  # a channel's pixels in one 16-byte lane: P <= 16
VECTOR = 64
TABLE = 2 * VECTOR  # the bytes one vpermi2b selects from
_VPERMI2B = "llvm.x86.avx512.vpermi2var.qi.512"


@dataclass(frozen=True)
class TileBytes:
    """``pixels`` consecutive pixels of one output row x ``channels`` channels of ``dtype`` (``DTYPES``)."""

    pixels: int
    channels: int
    dtype: str

    def __post_init__(self) -> None:
        if not fits(self.pixels, self.channels, self.dtype):
            raise ValueError(f"no transposing kernel for {self}")

    def name(self, kind: str) -> str:
        return f"qc_transpose_{kind}_{self.pixels}x{self.channels}_{self.dtype}"


def fits(pixels: int, channels: int, dtype: str) -> bool:
    """Whether a tile of ``pixels`` x ``channels`` of ``dtype`` has transposing kernels."""
    return 1 <= pixels <= LANE_BYTES and channels % 4 == 0 and dtype in DTYPES


def _constant(values: list[int], dtype: str):
    """A constant vector of ``values``."""
    return T.Shuffle([tvm.tirx.const(v, dtype) for v in values], list(range(len(values))))


def _permute(tables: list, sources: list[int | None], dtype: str):
    """The vector of ``dtype`` whose byte j is byte ``sources[j]`` of the concatenated ``tables`` (64 bytes
    each; None: any byte), as one ``vpermi2b`` per 128-byte pair of tables it reads, merged by masks."""
    pairs = sorted({s // TABLE for s in sources if s is not None})
    result = None
    for pair in pairs:
        index = [s % TABLE if s is not None and s // TABLE == pair else 0 for s in sources]
        low = T.reinterpret("int8x64", tables[2 * pair])
        high = T.reinterpret("int8x64", tables[2 * pair + 1] if 2 * pair + 1 < len(tables) else tables[2 * pair])
        permuted = T.reinterpret("uint8x64", T.call_llvm_pure_intrin(
            "int8x64", _VPERMI2B, low, _constant([v - 256 if v > 127 else v for v in index], "int8"), high))
        if len(pairs) > 1:
            keep = [255 if s is not None and s // TABLE == pair else 0 for s in sources]
            permuted = T.bitwise_and(permuted, _constant(keep, "uint8"))
        result = permuted if result is None else T.bitwise_or(result, permuted)
    return result if dtype == "uint8" else T.reinterpret(f"{dtype}x{VECTOR}", result)


def _description(tile: TileBytes, kind: str):
    """``store``: nchw[0, o, 0, x] = tile[0, 0, x, o]; ``load``: the other way."""
    p, c, dtype = tile.pixels, tile.channels, tile.dtype

    @T.prim_func(s_tir=True)
    def store(staged: T.Buffer((p, c), dtype, offset_factor=1),
              nchw: T.Buffer((1, c, 1, p), dtype, offset_factor=1)) -> None:
        with T.sblock("root"):
            T.reads(staged[0:p, 0:c])
            T.writes(nchw[0:1, 0:c, 0:1, 0:p])
            for o, x in T.grid(c, p):
                with T.sblock("copy"):
                    vo, vx = T.axis.remap("SS", [o, x])
                    nchw[0, vo, 0, vx] = staged[vx, vo]

    @T.prim_func(s_tir=True)
    def load(nchw: T.Buffer((1, c, 1, p), dtype, offset_factor=1),
             staged: T.Buffer((p, c), dtype, offset_factor=1)) -> None:
        with T.sblock("root"):
            T.reads(nchw[0:1, 0:c, 0:1, 0:p])
            T.writes(staged[0:p, 0:c])
            for o, x in T.grid(c, p):
                with T.sblock("copy"):
                    vo, vx = T.axis.remap("SS", [o, x])
                    staged[vx, vo] = nchw[0, vo, 0, vx]

    return store if kind == "store" else load


def _implementation(tile: TileBytes, kind: str):
    """Straight-line code: see the module docstring."""
    p, c, dtype = tile.pixels, tile.channels, tile.dtype
    total = p * c
    with IRBuilder() as builder:
        with build_prim_func(s_tir=True):
            T.func_name("impl")
            first, second = (T.arg(n, T.handle()) for n in ("a", "b"))
            staged_handle, nchw_handle = (first, second) if kind == "store" else (second, first)
            staged = T.match_buffer(staged_handle, (p, c), dtype, strides=[c, 1], offset_factor=1)
            nchw = T.match_buffer(nchw_handle, (1, c, 1, p), dtype,
                                  strides=[T.int64(), T.int64(), T.int64(), 1], offset_factor=1)
            with T.sblock("root"):
                if kind == "store":
                    T.reads(staged[0:p, 0:c])
                    T.writes(nchw[0:1, 0:c, 0:1, 0:p])
                    tables = [T.Bind(masked_load(dtype, VECTOR, T.address_of(staged[(VECTOR * m) // c,
                                                                              (VECTOR * m) % c]),
                                                  min(VECTOR, total - VECTOR * m)))
                              for m in range(-(-total // VECTOR))]
                    for group in range(c // 4):  # four channels, one per 16-byte lane
                        sources = [(j % LANE_BYTES) * c + 4 * group + j // LANE_BYTES
                                   if j % LANE_BYTES < p else None for j in range(VECTOR)]
                        lanes = T.Bind(_permute(tables, sources, dtype))
                        for lane in range(4):
                            part = T.Shuffle([lanes], list(range(LANE_BYTES * lane, LANE_BYTES * (lane + 1))))
                            masked_store(dtype, LANE_BYTES, part, T.address_of(nchw[0, 4 * group + lane, 0, 0]), p)
                else:
                    T.reads(nchw[0:1, 0:c, 0:1, 0:p])
                    T.writes(staged[0:p, 0:c])
                    rows = [masked_load(dtype, LANE_BYTES, T.address_of(nchw[0, o, 0, 0]), p) for o in range(c)]
                    tables = [T.Bind(T.Shuffle(rows[4 * g:4 * g + 4], list(range(VECTOR)))) for g in range(c // 4)]
                    for m in range(-(-total // VECTOR)):
                        sources = []
                        for j in range(VECTOR):
                            flat = VECTOR * m + j
                            x, o = divmod(flat, c)
                            sources.append((o // 4) * VECTOR + (o % 4) * LANE_BYTES + x if flat < total else None)
                        masked_store(dtype, VECTOR, _permute(tables, sources, dtype),
                                     T.address_of(staged[(VECTOR * m) // c, (VECTOR * m) % c]),
                                     min(VECTOR, total - VECTOR * m))
    return builder.get()


def intrinsic(tile: TileBytes, kind: str) -> str:
    """The name of ``tile``'s ``store`` or ``load`` kernel as a tensor intrinsic, registered on first use."""
    name = tile.name(kind)
    try:
        TensorIntrin.get(name)
    except Exception:  # noqa: BLE001  (not registered yet)
        TensorIntrin.register(name, _description(tile, kind), _implementation(tile, kind))
    return name


def transpose_write_back(sch: s_tir.Schedule, write_back) -> bool:
    """Stage ``write_back`` (a tile's epilogue, its two innermost loops pixels x channels, channels in the
    lanes, into an NCHW uint8 output) through a pixel-major buffer per iteration of the loop around them,
    moved out by the ``store`` kernel, and its NCHW uint8 side inputs of the output's shape (a residual) in
    through ``load``. False (``sch`` unchanged) where the tile does not fit: its pixels not within one output
    row (the tile's pixel count dividing the row), or not uint8."""
    stage = sch.get(write_back)
    out = stage.writes[0].source
    loops = sch.get_loops(write_back)
    if len(out.shape) != 4 or str(out.dtype) not in DTYPES or len(loops) < 3:
        return False
    loop = loops[-3]
    pixels, channels = (int(sch.get(l).extent) for l in loops[-2:])
    if int(out.shape[3]) % pixels or not fits(pixels, channels, str(out.dtype)):
        return False
    height, width = (int(d) for d in out.shape[2:])
    pixel_major = lambda n, c, y, x: ((n * height + y) * width + x, c)  # noqa: E731  (a tile: [P, C], compact)
    sides = [i for i, read in enumerate(stage.reads)
             if not read.source.same_as(out) and len(read.source.shape) == 4
             and [int(d) for d in read.source.shape] == [int(d) for d in out.shape]
             and str(read.source.dtype) in DTYPES]
    staged_out = sch.cache_write(write_back, 0, "global")
    sch.reverse_compute_at(staged_out, loop)
    sch.transform_layout(write_back, ("write", 0), pixel_major)
    for index in sides:
        dtype = str(sch.get(write_back).reads[index].source.dtype)
        staged_in = sch.cache_read(write_back, index, "global")
        sch.compute_at(staged_in, loop)
        sch.transform_layout(staged_in, ("write", 0), pixel_major)
        sch.tensorize(sch.get_loops(staged_in)[-2], intrinsic(TileBytes(pixels, channels, dtype), "load"))
    sch.tensorize(sch.get_loops(staged_out)[-2], intrinsic(TileBytes(pixels, channels, str(out.dtype)), "store"))
    return True
