"""This machine's arithmetic peak, measured by microkernels compiled with TVM: int8 dot products and fp32 FMA.

Each microkernel runs ``iterations`` rounds of ``ACCUMULATORS`` independent vector instructions whose
operands stay in registers (no memory traffic), once per core in parallel: ``vpdpbusd`` on 512-bit
registers (16 lanes x 4 uint8 x int8 products = 128 int8 ops) where the CPU has AVX-512 VNNI, else
``vpmaddwd`` + ``vpaddd`` (the ``WIDE`` kernels' step, ``backends.x86_packed``; 16 int16 products per ymm = 32
ops) on 512-bit registers where it has AVX-512 BW, else on 256-bit ones where it has AVX2, and ``vfmadd`` on
512-bit (AVX-512) or 256-bit (AVX2) registers;
where the CPU has AMX-INT8, also 4 independent ``tdpbusd`` on tile registers (16 x 16 x 64 products each).
The best of ``repeat`` timed runs is the peak; benchmarks report their kernels as a fraction of it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import tvm
from tvm.script import tirx as T

ACCUMULATORS = 12  # independent chains: enough to hide a 4-5 cycle latency at two instructions per cycle


@dataclass(frozen=True)
class Peak:
    """Measured peaks in billions of operations per second (a multiply-add counts as two)."""

    cores: int
    int8_gops: float | None  # None: neither AVX-512 VNNI nor AVX2 on this CPU
    fp32_gflops: float
    int8_instruction: str | None
    fp32_instruction: str
    amx_int8_gops: float | None = None  # AMX tiles (tdpbusd), where the CPU has them and Linux grants them

    def to_json(self) -> dict:
        return asdict(self)


def _microkernel(intrinsic: str, vector: str, operand: str, lanes: int, width: int, cores: int, iterations: int,
                 accumulates: bool = True):
    """``acc = intrinsic(acc, a, a)`` (``accumulates``: vpdpbusd, vfmadd) or ``acc += intrinsic(acc, a)``."""
    acc_lanes = ACCUMULATORS * lanes
    scalar = vector.split("x")[0]

    @T.prim_func(s_tir=True)
    def peak(a: T.Buffer((width,), operand), out: T.Buffer((cores, acc_lanes), scalar)):
        for core in T.parallel(cores):
            # "global" scope and under 1 KB: a stack array, which LLVM keeps in registers
            acc = T.alloc_buffer((acc_lanes,), scalar, scope="global")
            for r in T.unroll(ACCUMULATORS):
                acc[T.ramp(r * lanes, 1, lanes)] = T.broadcast(T.Cast(scalar, 0), lanes)
            for _ in range(iterations):
                for r in T.unroll(ACCUMULATORS):
                    if accumulates:
                        acc[T.ramp(r * lanes, 1, lanes)] = T.call_llvm_pure_intrin(
                            T.llvm_lookup_intrinsic_id(intrinsic), acc[T.ramp(r * lanes, 1, lanes)],
                            a[T.ramp(0, 1, width)], a[T.ramp(0, 1, width)], dtype=vector)
                    else:
                        # the product reads the accumulator, so LLVM cannot hoist it out of the loop
                        acc[T.ramp(r * lanes, 1, lanes)] = acc[T.ramp(r * lanes, 1, lanes)] + T.call_llvm_pure_intrin(
                            T.llvm_lookup_intrinsic_id(intrinsic),
                            T.reinterpret(acc[T.ramp(r * lanes, 1, lanes)], dtype=f"{operand}x{width}"),
                            a[T.ramp(0, 1, width)], dtype=vector)
            for r in T.unroll(ACCUMULATORS):
                out[core, T.ramp(r * lanes, 1, lanes)] = acc[T.ramp(r * lanes, 1, lanes)]

    return peak


AMX_ACCUMULATORS = 4  # C tiles 4..7, each += A(16 x 64 uint8) . B(16 x 16 x 4 int8) per tdpbusd
AMX_OPS = 16 * 16 * 64 * 2  # one tdpbusd: 16 x 16 int32 outputs, each + 64 products


def _amx_microkernel(cores: int, iterations: int):
    """Per core: 2 A and 2 B tiles loaded once, then ``iterations`` rounds of 4 independent ``tdpbusd``
    into accumulator tiles (no memory traffic), stored at the end so the work is kept."""
    from .x86_amx import TILE_BYTES, TILE_ROWS, configure_tiles

    def tile(op: str, *args):
        return T.evaluate(T.call_llvm_intrin("void", f"llvm.x86.{op}", *args))

    @T.prim_func(s_tir=True)
    def peak(a: T.Buffer((TILE_ROWS * TILE_BYTES,), "int8"), out: T.Buffer((cores, 4, TILE_ROWS, 16), "int32")):
        for core in T.parallel(cores):
            configure_tiles()
            for t in T.unroll(4):
                tile("tileloadd64", T.uint8(t), a.access_ptr("r"), T.int64(TILE_BYTES))
                tile("tilezero", T.uint8(4 + t))
            for _ in range(iterations):
                for i in T.unroll(2):
                    for j in T.unroll(2):
                        tile("tdpbusd", T.uint8(4 + 2 * i + j), T.uint8(i), T.uint8(2 + j))
            for t in T.unroll(4):
                tile("tilestored64", T.uint8(4 + t), out.access_ptr("w", offset=(core * 4 + t) * TILE_ROWS * 16),
                     T.int64(64))
            tile("tilerelease")

    return peak


def _measure(func, operand: str, width: int, out_shape: tuple[int, int], out_dtype: str, ops_per_call: float,
             target, repeat: int) -> float:
    lib = tvm.compile(tvm.IRModule({"main": func}), target=target)
    a = tvm.runtime.tensor(np.ones(width, operand))
    out = tvm.runtime.tensor(np.zeros(out_shape, out_dtype))
    lib["main"](a, out)  # wake the thread pool
    seconds = lib.mod.time_evaluator("main", tvm.cpu(), number=3, repeat=repeat)(a, out).results
    return ops_per_call / min(seconds) / 1e9


def measure_peak(target=None, cores: int | None = None, iterations: int = 200_000, repeat: int = 5) -> Peak:
    """Measure the int8 (VNNI, else AVX2) and fp32 (FMA) peaks of the host with ``cores`` threads (default: all)."""
    from tvm.target.codegen import target_has_features

    from .cpu import host_target
    from .x86_amx import enable_amx, has_amx
    from .x86_packed import has_avx2, has_avx512bw, has_vnni

    target = target or host_target(cores)
    cores = int(target.attrs.get("num-cores", cores or 1))
    int8, int8_instruction = None, None
    if has_vnni(target):
        func = _microkernel("llvm.x86.avx512.vpdpbusd.512", "int32x16", "int8", 16, 64, cores, iterations)
        int8 = _measure(func, "int8", 64, (cores, ACCUMULATORS * 16), "int32",
                        cores * iterations * ACCUMULATORS * 16 * 4 * 2, target, repeat)
        int8_instruction = "vpdpbusd zmm"
    elif has_avx2(target):  # the WIDE kernels' step: vpmaddwd + vpaddd, on zmm where the CPU has AVX-512 BW
        lanes, name = ((16, "llvm.x86.avx512.pmaddw.d.512") if has_avx512bw(target)
                       else (8, "llvm.x86.avx2.pmadd.wd"))
        func = _microkernel(name, f"int32x{lanes}", "int16", lanes, 2 * lanes, cores, iterations, accumulates=False)
        int8 = _measure(func, "int16", 2 * lanes, (cores, ACCUMULATORS * lanes), "int32",
                        cores * iterations * ACCUMULATORS * lanes * 2 * 2, target, repeat)
        int8_instruction = f"vpmaddwd+vpaddd {'zmm' if lanes == 16 else 'ymm'}"
    lanes = 16 if target_has_features("avx512f", target) else 8
    func = _microkernel(f"llvm.fma.v{lanes}f32", f"float32x{lanes}", "float32", lanes, lanes, cores, iterations)
    fp32 = _measure(func, "float32", lanes, (cores, ACCUMULATORS * lanes), "float32",
                    cores * iterations * ACCUMULATORS * lanes * 2, target, repeat)
    amx = None
    if has_amx(target) and enable_amx():
        rounds = iterations // 10  # a tenth of the vector microkernels' rounds: each does 4 x 32768 ops
        amx = round(_measure(_amx_microkernel(cores, rounds), "int8", 16 * 64, (cores, 4, 16, 16), "int32",
                             cores * rounds * AMX_ACCUMULATORS * AMX_OPS, target, repeat), 1)
    return Peak(cores, None if int8 is None else round(int8, 1), round(fp32, 1), int8_instruction,
                f"vfmadd {'zmm' if lanes == 16 else 'ymm'}", amx)
