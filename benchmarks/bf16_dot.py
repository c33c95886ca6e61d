"""Do bf16 dot products pay on this CPU? One ``vdpbf16ps`` matmul at MiniLM's FFN shape against qc's int8 and
fp32 kernels (``backends.x86_packed``), in one run.

    .venv/bin/python benchmarks/bf16_dot.py [--shape 128x384x1536] [--threads 2]

``vdpbf16ps`` (AVX-512 BF16) adds to each of 16 float32 lanes the products of two bf16 pairs: 32 multiply-adds
per instruction, against 64 for ``vpdpbusd`` (int8) and 16 for a float32 FMA. The bf16 kernel has the layout
and register tile of qc's packed matmul (the weight as [N/16, K/2, 16, 2] bf16, the activations broadcast
two at a time, 8 rows x 3 blocks of 16 accumulators, rows x blocks split over the threads by OpenMP) but is
written in C with the compiler's intrinsic and built here by the host's C compiler: TVM 0.27's TIR pipeline
rewrites bf16 values as float32 and bf16 storage as uint16 before code generation, and handing the
instruction a bf16 vector with those passes skipped crashed its LLVM code generator. Not a compile target:
this measures whether one would pay. The bf16 result is compared with float64 sums of the bf16-rounded
operands, the int8 one bit for bit; each kernel is timed as the median of 7 repeats of 20 calls, with the int8
and fp32 peaks of ``backends.peak`` and the rate of ``vdpbf16ps`` itself (24 independent ones in a loop, one
thread) measured in the same run.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import subprocess
import tempfile
import time
from pathlib import Path

import ml_dtypes
import numpy as np
import tvm

from backends import host_target
from backends.peak import measure_peak
from backends.x86_packed import build_kernel
from passes.packed_layouts import FP32, INT8, matmul_kernel, pack_matmul_weight

KERNEL = r"""
#include <immintrin.h>
#include <stdint.h>
/* C = A @ W: A [M][K] bf16 bits, P = W packed [N/16][K/2][16][2] bf16 bits, C [M][N] float32.
   Tiles of 8 rows x 3 blocks of 16 columns (M % 8 == 0, N % 48 == 0), accumulators in registers. */
void matmul_bf16(const uint16_t *A, const uint16_t *P, float *C, int M, int K, int N) {
  int blocks = N / 16;
  #pragma omp parallel for collapse(2) schedule(static)
  for (int r0 = 0; r0 < M; r0 += 8)
    for (int b0 = 0; b0 < blocks; b0 += 3) {
      __m512 acc[8][3];
      for (int i = 0; i < 8; i++) for (int j = 0; j < 3; j++) acc[i][j] = _mm512_setzero_ps();
      for (int k = 0; k < K / 2; k++) {
        __m512bh w[3];
        for (int j = 0; j < 3; j++) w[j] = (__m512bh)_mm512_loadu_si512(P + ((size_t)(b0 + j) * (K / 2) + k) * 32);
        for (int i = 0; i < 8; i++) {
          __m512bh a = (__m512bh)_mm512_set1_epi32(*(const int32_t *)(A + (size_t)(r0 + i) * K + 2 * k));
          for (int j = 0; j < 3; j++) acc[i][j] = _mm512_dpbf16_ps(acc[i][j], a, w[j]);
        }
      }
      for (int i = 0; i < 8; i++) for (int j = 0; j < 3; j++)
        _mm512_storeu_ps(C + (size_t)(r0 + i) * N + (b0 + j) * 16, acc[i][j]);
    }
}
#include <omp.h>
void set_threads(int count) { omp_set_num_threads(count); }
/* The instruction's own rate: n rounds of 24 independent vdpbf16ps (one thread). */
float spin_bf16(long n) {
  __m512 acc[24];
  for (int i = 0; i < 24; i++) acc[i] = _mm512_set1_ps((float)i);
  __m512bh a = (__m512bh)_mm512_set1_epi32(0x3f803f80);
  for (long it = 0; it < n; it++) {
    #pragma GCC unroll 24
    for (int i = 0; i < 24; i++) acc[i] = _mm512_dpbf16_ps(acc[i], a, a);
  }
  float sum = 0;
  for (int i = 0; i < 24; i++) sum += _mm512_reduce_add_ps(acc[i]);
  return sum;
}
"""


def _bf16_library(directory: Path) -> ctypes.CDLL:
    source, library = directory / "bf16.c", directory / "libbf16.so"
    source.write_text(KERNEL)
    subprocess.run(["cc", "-O3", "-mavx512f", "-mavx512bf16", "-fopenmp", "-shared", "-fPIC", str(source), "-o",
                    str(library)], check=True, capture_output=True)
    return ctypes.CDLL(str(library))


def _median(call) -> float:
    call()
    times = []
    for _ in range(7):
        start = time.perf_counter()
        for _ in range(20):
            call()
        times.append((time.perf_counter() - start) / 20)
    return float(np.median(times))


def _tvm_seconds(lib, *args) -> float:
    return float(np.median(lib.mod.time_evaluator("main", tvm.cpu(), number=20, repeat=7)(*args).results))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="128x384x1536", help="MxKxN (MiniLM's first FFN matmul)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    m, k, n = (int(v) for v in args.shape.split("x"))
    if m % 8 or n % 48 or k % 2:
        parser.error(f"the bf16 kernel needs M % 8, N % 48 and K % 2 == 0; got {args.shape}")
    target = host_target(args.threads)
    from tvm.target.codegen import target_has_features

    if not target_has_features("avx512bf16", target):
        parser.error(f"this CPU ({target.attrs.get('mcpu')}) has no AVX-512 BF16: nothing to measure")
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    rng = np.random.default_rng(0)
    peak = measure_peak(target)
    ops, rows = 2 * m * k * n, []

    x, w = rng.standard_normal((m, k)).astype(np.float32), rng.standard_normal((k, n)).astype(np.float32) / 20
    xb, wb = x.astype(ml_dtypes.bfloat16).view(np.uint16), w.astype(ml_dtypes.bfloat16).view(np.uint16)
    packed = np.ascontiguousarray(pack_matmul_weight(wb, 2))
    out = np.zeros((m, n), np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        library = _bf16_library(Path(tmp))
        library.set_threads(args.threads)  # (OMP_NUM_THREADS may have been read before main set it)
        kernel = library.matmul_bf16
        pointers = [a.ctypes.data_as(ctypes.c_void_p) for a in (xb, packed, out)]
        call = lambda: kernel(*pointers, m, k, n)  # noqa: E731
        seconds = _median(call)
        spin, rounds = library.spin_bf16, 2_000_000
        spin.argtypes, spin.restype = [ctypes.c_long], ctypes.c_float
        spin(rounds // 10)
        start = time.perf_counter()
        spin(rounds)
        bf16_peak = rounds * 24 * 64 / (time.perf_counter() - start) / 1e9  # 32 multiply-adds per instruction
    want = xb.view(ml_dtypes.bfloat16).astype(np.float64) @ wb.view(ml_dtypes.bfloat16).astype(np.float64)
    scale = np.abs(want).max()
    rows.append(("bf16 vdpbf16ps", seconds, f"max error {np.abs(out - want).max() / scale:.1e} of the largest"))

    xq, wq = rng.integers(0, 256, (m, k), dtype=np.uint8), rng.integers(-128, 128, (k, n), dtype=np.int8)
    acc = tvm.runtime.tensor(np.zeros((m, n), np.int32))
    lib = build_kernel(matmul_kernel(m, k, n, INT8), target)
    tensors = [tvm.runtime.tensor(xq), tvm.runtime.tensor(pack_matmul_weight(wq, 4)), acc]
    lib["main"](*tensors)
    exact = np.array_equal(acc.numpy(), xq.astype(np.int64) @ wq.astype(np.int64))
    rows.append(("int8 vpdpbusd", _tvm_seconds(lib, *tensors), "bit-exact" if exact else "WRONG"))

    result = tvm.runtime.tensor(np.zeros((m, n), np.float32))
    lib = build_kernel(matmul_kernel(m, k, n, FP32, ("float32", "float32")), target)
    tensors = [tvm.runtime.tensor(x), tvm.runtime.tensor(pack_matmul_weight(w, 1)), result]
    lib["main"](*tensors)
    error = np.abs(result.numpy() - x.astype(np.float64) @ w.astype(np.float64)).max() / scale
    rows.append(("fp32 vfmadd", _tvm_seconds(lib, *tensors), f"max error {error:.1e} of the largest"))

    print(f"{m}x{k}x{n}, {args.threads} threads; peaks: int8 {peak.int8_gops} GOP/s, fp32 {peak.fp32_gflops} "
          f"GFLOP/s ({args.threads} threads); vdpbf16ps {bf16_peak:.0f} GFLOP/s on one thread (one instruction "
          "does half a vpdpbusd's multiply-adds, twice an FMA's)")
    fp32 = rows[-1][1]
    for name, seconds, check in rows:
        print(f"  {name:15s} {seconds * 1e6:8.1f} us  {ops / seconds / 1e9:7.0f} GOP/s  {fp32 / seconds:5.2f}x fp32"
              f"   {check}")


if __name__ == "__main__":
    main()
