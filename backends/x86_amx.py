"""AMX kernels for the packed int8 layouts: tile matrix multiplies (``tdpbusd`` / ``tdpbsud``) on Intel CPUs
with AMX-INT8 (Sapphire Rapids and later).

An AMX tile register holds 16 rows of 64 bytes; one ``tdpbusd`` multiplies a 16 x 64 uint8 tile A by a
16 x 64 int8 tile B held "four bytes per column" (row q holds, for each of 16 columns n, the 4 reduction
elements 4q..4q+3) and adds the 16 x 16 int32 products to a third tile: 16,384 multiply-adds, eight times
one ``vpdpbusd`` per cycle. Both layouts of ``passes.packed_layouts`` already hold the B operand in that
form, so no repacking is needed:

- matmul ``acc[m, n] += data[m, k] * P[n // 16, k // 4, n % 16, k % 4]``: A = 16 rows of ``data`` (64 of
  K), B = ``P[n-block, 16q:16q+16]`` (1 KB, contiguous) -> ``tdpbusd`` (A unsigned, B signed);
- conv ``acc[o, p] += col[r // 4, p, r % 4] * W[o, r]``: A = 16 rows of the flattened weight (64 of R),
  B = ``col[16q:16q+16, 16 pixels]`` -> ``tdpbsud`` (A signed, B unsigned).

The schedule keeps a tile of ``rows`` x ``cols`` 16 x 16 accumulators (at most 2 x 2: with 2 A and 2 B tiles
that is all 8 tile registers) in AMX registers over the whole reduction: one tensorized call loads the
accumulators from the tile's write-back buffer, runs the reduction 64 elements at a time and stores them
back; the fused epilogue then writes the tile out as in ``backends.x86_packed``. The reduction must be a
multiple of 64 (``pack_int8_layers`` pads convolutions so when the target has AMX; a matmul whose K is not
keeps the VNNI schedule), and rows a multiple of 16.

Numerics: exact (int32 sums of uint8 x int8 products, no saturation), the same bits as every other int8
schedule. The operating system hands out AMX state only to a process that asks (Linux's
``arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)``): ``enable_amx`` asks, once per process, and an
artifact built with AMX is refused at load time where the CPU or the kernel cannot run it
(``compiler.executable``, ``backends.targets.missing_features``).
"""

from __future__ import annotations

import ctypes
import functools
import platform

import tvm
from tvm import s_tir
from tvm.s_tir import TensorIntrin
from tvm.script import tirx as T

AMX = "amx-int8"
TILE_ROWS = 16  # rows of a tile register, and 16 int32 columns of an accumulator tile
TILE_BYTES = 64  # bytes per tile row: 64 reduction elements of A, 16 x 4 of B
MAX_TILE = (2, 2)  # accumulator tiles (rows, cols): with their 2 + 2 operand tiles, all 8 registers


def has_amx(target: tvm.target.Target) -> bool:
    """Whether ``target``'s CPU has AMX tiles with int8 dot products (from its ``mcpu`` and ``mattr``)."""
    if target.kind.name != "llvm":
        return False
    from tvm.target.codegen import target_has_features

    return bool(target_has_features("amx-int8", target)) and bool(target_has_features("amx-tile", target))


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The feature flags this machine's CPU and kernel report (``/proc/cpuinfo``; empty where it is absent)."""
    try:
        with open("/proc/cpuinfo") as info:
            return frozenset(next((line.split(":", 1)[1].split() for line in info if line.startswith("flags")), []))
    except OSError:
        return frozenset()


def host_amx_features() -> list[str]:
    """``["+amx-tile", "+amx-int8"]`` when this machine's CPU and kernel report AMX-INT8, else ``[]``."""
    return ["+amx-tile", "+amx-int8"] if {"amx_tile", "amx_int8"} <= cpu_flags() else []


_ARCH_REQ_XCOMP_PERM, _XFEATURE_XTILEDATA, _SYS_ARCH_PRCTL = 0x1023, 18, 158


@functools.cache
def enable_amx() -> bool:
    """Ask Linux for this process's AMX tile state (once); True when granted. Without it the first tile
    instruction kills the process (SIGILL)."""
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64") or not host_amx_features():
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.syscall(_SYS_ARCH_PRCTL, _ARCH_REQ_XCOMP_PERM, _XFEATURE_XTILEDATA) == 0


@T.macro
def configure_tiles():
    """``ldtilecfg``: palette 1, all 8 tile registers 16 rows x 64 bytes (a tile kernel's first instruction)."""
    cfg = T.decl_buffer((64,), "uint8")
    for t in range(64):
        cfg[t] = T.uint8(0)
    cfg[0] = T.uint8(1)
    for t in range(8):
        cfg[16 + 2 * t] = T.uint8(TILE_BYTES)
        cfg[48 + t] = T.uint8(TILE_ROWS)
    T.evaluate(T.call_llvm_intrin("void", "llvm.x86.ldtilecfg", cfg.access_ptr("r")))


def _intrinsic(kind: str, rows: int, cols: int, reduce: int):
    """(description, implementation) of one tile of ``rows`` x ``cols`` accumulators over a reduction of
    ``reduce`` elements, for the ``matmul`` or ``conv`` layout."""
    m, n, chunks = TILE_ROWS * rows, TILE_ROWS * cols, reduce // TILE_BYTES
    first_c = rows + cols  # tiles 0..rows-1 hold A, then cols B tiles, then the accumulators row by row
    if kind == "matmul":
        dot, a_dtype, b_dtype, b_shape = "llvm.x86.tdpbusd", "uint8", "int8", (cols, reduce // 4, 16, 4)
    else:
        dot, a_dtype, b_dtype, b_shape = "llvm.x86.tdpbsud", "int8", "uint8", (reduce // 4, n, 4)

    if kind == "matmul":
        @T.prim_func(s_tir=True)
        def desc(a: T.Buffer((m, reduce), a_dtype, offset_factor=1), b: T.Buffer(b_shape, b_dtype, offset_factor=1),
                 c: T.Buffer((m, n), "int32", offset_factor=1)) -> None:
            with T.sblock("root"):
                T.reads(c[0:m, 0:n], a[0:m, 0:reduce], b[0:cols, 0:reduce // 4, 0:16, 0:4])
                T.writes(c[0:m, 0:n])
                for i, j, k in T.grid(m, n, reduce):
                    with T.sblock("update"):
                        vi, vj, vk = T.axis.remap("SSR", [i, j, k])
                        c[vi, vj] = c[vi, vj] + T.cast(a[vi, vk], "int32") * T.cast(
                            b[vj // 16, vk // 4, vj % 16, vk % 4], "int32")
    else:
        @T.prim_func(s_tir=True)
        def desc(a: T.Buffer((m, reduce), a_dtype, offset_factor=1), b: T.Buffer(b_shape, b_dtype, offset_factor=1),
                 c: T.Buffer((m, n), "int32", offset_factor=1)) -> None:
            with T.sblock("root"):
                T.reads(c[0:m, 0:n], b[0:reduce // 4, 0:n, 0:4], a[0:m, 0:reduce])
                T.writes(c[0:m, 0:n])
                for i, j, k in T.grid(m, n, reduce):
                    with T.sblock("update"):
                        vi, vj, vk = T.axis.remap("SSR", [i, j, k])
                        c[vi, vj] = c[vi, vj] + T.cast(b[vk // 4, vj, vk % 4], "int32") * T.cast(a[vi, vk], "int32")

    b_region = tuple(slice(0, d) for d in b_shape)

    @T.prim_func(s_tir=True)
    def impl(a_handle: T.handle, b_handle: T.handle, c_handle: T.handle) -> None:
        sa, sb, sc = T.int32(), T.int32(), T.int32()
        a = T.match_buffer(a_handle, (m, reduce), a_dtype, strides=[sa, 1], offset_factor=1)
        if kind == "matmul":
            b = T.match_buffer(b_handle, b_shape, b_dtype, strides=[sb, 64, 4, 1], offset_factor=1)
        else:
            b = T.match_buffer(b_handle, b_shape, b_dtype, strides=[sb, 4, 1], offset_factor=1)
        c = T.match_buffer(c_handle, (m, n), "int32", strides=[sc, 1], offset_factor=1)
        with T.sblock("root"):
            T.reads(c[0:m, 0:n], a[0:m, 0:reduce], b[b_region])
            T.writes(c[0:m, 0:n])
            configure_tiles()
            for i in T.unroll(rows):
                for j in T.unroll(cols):
                    T.evaluate(T.call_llvm_intrin(
                        "void", "llvm.x86.tileloadd64", T.uint8(first_c + i * cols + j),
                        c.access_ptr("r", offset=i * TILE_ROWS * sc + j * TILE_ROWS), T.int64(sc * 4)))
            for q in range(chunks):
                # operand addresses as address_of(element), not access_ptr: an operand computed in the kernel
                # (a 4-bit weight unpacked to int8) may share its memory with an earlier uint8 stage
                # (StorageRewrite), which access_ptr's element type check refuses
                for i in T.unroll(rows):
                    T.evaluate(T.call_llvm_intrin(
                        "void", "llvm.x86.tileloadd64", T.uint8(i), T.address_of(a[i * TILE_ROWS, q * TILE_BYTES]),
                        T.int64(sa)))
                for j in T.unroll(cols):
                    if kind == "matmul":
                        T.evaluate(T.call_llvm_intrin("void", "llvm.x86.tileloadd64", T.uint8(rows + j),
                                                      T.address_of(b[j, q * 16, 0, 0]), T.int64(64)))
                    else:
                        T.evaluate(T.call_llvm_intrin("void", "llvm.x86.tileloadd64", T.uint8(rows + j),
                                                      T.address_of(b[q * 16, j * 16, 0]), T.int64(sb)))
                for i in T.unroll(rows):
                    for j in T.unroll(cols):
                        T.evaluate(T.call_llvm_intrin("void", dot, T.uint8(first_c + i * cols + j), T.uint8(i),
                                                      T.uint8(rows + j)))
            for i in T.unroll(rows):
                for j in T.unroll(cols):
                    T.evaluate(T.call_llvm_intrin(
                        "void", "llvm.x86.tilestored64", T.uint8(first_c + i * cols + j),
                        c.access_ptr("w", offset=i * TILE_ROWS * sc + j * TILE_ROWS), T.int64(sc * 4)))

    return desc, impl


def intrinsic(kind: str, rows: int, cols: int, reduce: int) -> str:
    """The name of the AMX tile intrinsic for this shape, registered with TVM on first use."""
    name = f"qc_amx_{kind}_{rows}x{cols}_k{reduce}"
    try:
        TensorIntrin.get(name)
    except Exception:  # noqa: BLE001  (not registered yet)
        TensorIntrin.register(name, *_intrinsic(kind, rows, cols, reduce))
    return name


def _extent(sch: s_tir.Schedule, loop) -> int:
    return int(sch.get(loop).extent)


def _tiles(rows: int, cols: int) -> tuple[int, int]:
    """Accumulator tiles (rows, cols) for ``rows`` x ``cols`` blocks of 16 x 16: 2 where it divides, else 1."""
    return tuple(2 if blocks % 2 == 0 else 1 for blocks in (rows, cols))


def fits_tiles(sch: s_tir.Schedule, kind: str, block) -> tuple | None:
    """The (rows, lanes, reduction) loops of the packed ``kind`` block when its shape fits AMX tiles (rows
    and lanes multiples of 16, the reduction of 64, a matmul with one non-unit row loop), else None."""
    *spatial, lanes, reduction = sch.get_loops(block)
    if kind == "matmul":
        wide = [loop for loop in spatial if _extent(sch, loop) > 1]
        if len(wide) > 1:
            return None
        rows = wide[0] if wide else spatial[-1]
    else:
        rows = spatial[0]
    if _extent(sch, rows) % TILE_ROWS or _extent(sch, lanes) % TILE_ROWS or _extent(sch, reduction) % TILE_BYTES:
        return None
    return rows, lanes, reduction


def schedule_amx(sch: s_tir.Schedule, kind: str, block_name: str, write_back_at, lanes_outer: bool = False) -> bool:
    """Schedule the packed ``kind`` block (``matmul`` or ``conv``) of ``sch`` on AMX tiles; False (and
    ``sch`` untouched) when its shape does not fit: rows not a multiple of 16, a reduction not a multiple
    of 64, or (matmul) more than one non-unit row loop. ``write_back_at(sch, block, loop)`` places the
    accumulator buffer and the fused epilogue at ``loop`` (``backends.x86_packed``'s write-back);
    ``lanes_outer`` runs the tiles strip of columns by strip (``x86_packed.CACHED_IM2COL_BYTES``)."""
    block = sch.get_sblock(block_name)
    loops = fits_tiles(sch, kind, block)
    if loops is None:
        return False
    rows, lanes, reduction = loops
    extent_rows, extent_lanes, reduce = _extent(sch, rows), _extent(sch, lanes), _extent(sch, reduction)
    tile_rows, tile_cols = _tiles(extent_rows // TILE_ROWS, extent_lanes // TILE_ROWS)
    ro, ri = sch.split(rows, [None, TILE_ROWS * tile_rows])
    co, ci = sch.split(lanes, [None, TILE_ROWS * tile_cols])
    outer = (co, ro) if lanes_outer else (ro, co)
    sch.reorder(*outer, ri, ci, reduction)
    write_back_at(sch, block, outer[1])
    sch.parallel(sch.fuse(*outer))
    init = sch.decompose_reduction(block, ri)
    sch.vectorize(sch.get_loops(init)[-1])
    sch.tensorize(ri, intrinsic(kind, tile_rows, tile_cols, reduce))
    return True
