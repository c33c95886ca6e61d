"""Int8 kernels against this machine's peak: the 128x768x768 matmul, two GEMVs and the largest ResNet-18
convolutions, with 8-bit and (``--weight-bits 8,4``) 4-bit weights.

    .venv/bin/python benchmarks/int8_kernels.py [--threads 2] [--rows 8 --blocks 3] [--reduce-multiple 64]
                                                [--weight-bits 8,4] [--mcpu haswell]

Each kernel is built alone from ``pack_int8_layers``' compute (uint8 x int8 -> int32, weights packed) and
scheduled by ``backends.x86_packed`` with the default knobs (no tuning), checked bit for bit against numpy, then
timed (median of 7 repeats of 20 calls). GOP/s counts a multiply-add as two operations; the peak is the
``vpdpbusd`` microkernel of ``backends.peak`` measured in the same run. ``--reduce-multiple 64`` pads the
convolutions' reductions as ``pack_int8_layers`` does for AMX tiles, so on an AMX host those with a multiple of
16 output channels run on tiles (EfficientNet-Lite0's 1x1 16 -> 96 at 112x112 is added to show why small
reductions stay on ``vpdpbusd``: ``pack_int8_layers.AMX_MIN_REDUCTION``). A 4-bit weight is stored two
groups per byte (``passes.int4``) and unpacked by the kernel; with both widths each case prints the 4-bit
time over the 8-bit one, measured in the same run. The GEMVs' weights (16 and 64 MiB at 8 bits) are what
decides a memory-bound kernel. ``--mcpu`` builds for another x86 CPU that this one can run (e.g. ``haswell``,
``skylake-avx512``) with the kernels ``pack_int8_layers`` would give it (``WIDE`` int16 ``vpmaddwd`` kernels
where it lacks AVX-512 VNNI); GOP/s are still compared with this CPU's peak.
"""

from __future__ import annotations

import argparse

import numpy as np
import tvm

from backends import host_target
from backends.peak import measure_peak
from backends.cpu import missing_features
from backends.x86_packed import Knobs, build_kernel, default_knobs, instruction_set
from passes.pack_int8_layers import packing_for
from passes.int4 import pack_conv_nibbles, pack_matmul_nibbles
from passes.packed_layouts import (
    INT8,
    WIDE,
    ConvGeometry,
    Packing,
    conv_kernel,
    flatten_conv_weight,
    matmul_kernel,
    pack_matmul_weight,
)

RESNET18_CONVS = {  # (channels in, out, kernel, stride, padding, input size): the largest by MACs
    "resnet18 conv1 7x7/2 3->64 @224": (3, 64, 7, 2, 3, 224),
    "resnet18 layer1 3x3 64->64 @56": (64, 64, 3, 1, 1, 56),
    "resnet18 layer4 3x3 512->512 @7": (512, 512, 3, 1, 1, 7),
    "efficientnet-lite0 1x1 16->96 @112": (16, 96, 1, 1, 0, 112),
}


MATMULS = {"matmul 128x768x768": (128, 768, 768), "gemv 1x4096x4096": (1, 4096, 4096),
           "gemv 1x8192x8192": (1, 8192, 8192)}


def _weight(rng, shape, bits: int) -> np.ndarray:
    low, high = (-8, 8) if bits == 4 else (-128, 128)
    return rng.integers(low, high, shape, dtype=np.int8)


def matmul_case(m: int, k: int, n: int, rng, bits: int = 8, packing: Packing = INT8):
    a = rng.integers(0, 256, (m, k), dtype=np.uint8)
    w = _weight(rng, (k, n), bits)
    packed = pack_matmul_weight(w, packing.group)
    stored = pack_matmul_nibbles(packed) if bits == 4 else packed
    return (matmul_kernel(m, k, n, packing, nibbles=bits == 4), [a, stored], a.astype(np.int64) @ w.astype(np.int64),
            2 * m * k * n)


def conv_case(cin: int, cout: int, kernel: int, stride: int, pad: int, size: int, rng, multiple: int | None = None,
              bits: int = 8, packing: Packing = INT8):
    import torch

    geometry = ConvGeometry(cin, size, size, (kernel, kernel), (stride, stride), (pad,) * 4, (1, 1))
    w = _weight(rng, (cout, cin, kernel, kernel), bits)
    x = rng.integers(0, 256, (1, cin, size, size), dtype=np.uint8)
    as_float = lambda a: torch.from_numpy(a.astype(np.float64))  # noqa: E731  (exact: sums stay below 2^53)
    expected = torch.nn.functional.conv2d(as_float(x), as_float(w), stride=stride, padding=pad).numpy().astype(np.int64)
    multiple = multiple or packing.group
    flat = flatten_conv_weight(w, multiple)
    inputs = [x, pack_conv_nibbles(flat) if bits == 4 else flat.astype(packing.operand or flat.dtype),
              geometry.reduce_offsets(multiple)]
    return (conv_kernel(geometry, cout, packing, reduce_multiple=multiple, nibbles=bits == 4), inputs, expected,
            2 * expected.size * cin * kernel * kernel)


def run(func, inputs, expected, ops, target, knobs) -> tuple[float, bool]:
    lib = build_kernel(func, target, knobs)
    args = [tvm.runtime.tensor(a) for a in inputs] + [tvm.runtime.tensor(np.zeros(expected.shape, "int32"))]
    lib["main"](*args)
    exact = bool(np.array_equal(args[-1].numpy(), expected))
    seconds = np.median(lib.mod.time_evaluator("main", tvm.cpu(), number=20, repeat=7)(*args).results)
    return ops / seconds / 1e9, exact, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rows", type=int, default=None, help="register tile rows (default: the target's)")
    parser.add_argument("--blocks", type=int, default=None, help="register tile blocks of 16 lanes")
    parser.add_argument("--reduce-multiple", type=int, default=None,
                        help="pad conv reductions to this multiple (64: AMX tiles where the host has them)")
    parser.add_argument("--weight-bits", default="8", help="weight widths to time, e.g. 8,4")
    parser.add_argument("--mcpu", default=None, help="build for this x86 CPU (LLVM's name) instead of the host")
    args = parser.parse_args()
    target = host_target(args.threads)
    if args.mcpu:
        target = tvm.target.Target({"kind": "llvm", "mcpu": args.mcpu, "num-cores": args.threads})
        if missing_features(target):
            parser.error(f"this CPU cannot run code for {args.mcpu}: it lacks {', '.join(missing_features(target))}")
    packing = packing_for(target)
    default = default_knobs(target, packing)
    knobs = Knobs(args.rows or default.rows, args.blocks or default.blocks)
    peak = measure_peak(target)
    amx = f", AMX tiles {peak.amx_int8_gops} GOP/s" if peak.amx_int8_gops else ""
    step = "vpmaddwd on int16 (WIDE)" if packing is WIDE else instruction_set(target)
    print(f"peak ({args.threads} threads): int8 {peak.int8_gops} GOP/s ({peak.int8_instruction}){amx}, "
          f"fp32 {peak.fp32_gflops} GFLOP/s ({peak.fp32_instruction}); target {target.attrs.get('mcpu')}, int8 step: "
          f"{step}; knobs {knobs}")
    rng = np.random.default_rng(0)
    widths = [int(b) for b in args.weight_bits.split(",")]
    cases = {name: lambda bits, shape=shape: matmul_case(*shape, rng, bits, packing) for name, shape in MATMULS.items()}
    cases.update({name: lambda bits, shape=shape: conv_case(*shape, rng, args.reduce_multiple, bits, packing)
                  for name, shape in RESNET18_CONVS.items()})
    for name, case in cases.items():
        times = {}
        for bits in widths:
            gops, exact, times[bits] = run(*case(bits), target, knobs)
            fraction = f"{gops / peak.int8_gops:.0%} of int8 peak" if peak.int8_gops else "no int8 peak"
            ratio = f"  {times[4] / times[8]:.2f}x the 8-bit time" if bits == 4 and 8 in times else ""
            print(f"{name:36s} W{bits} {times[bits] * 1e6:9.1f} us  {gops:7.1f} GOP/s  {fraction}  "
                  f"exact={exact}{ratio}", flush=True)


if __name__ == "__main__":
    main()
