"""Int8 kernels against this machine's peak: the 128x768x768 matmul and the largest ResNet-18 convolutions.

    .venv/bin/python benchmarks/int8_kernels.py [--threads 2] [--rows 8 --blocks 3] [--reduce-multiple 64]

Each kernel is built alone from ``pack_int8_layers``' compute (uint8 x int8 -> int32, weights packed) and
scheduled by ``backends.x86_packed`` with the default knobs (no tuning), checked bit for bit against numpy, then
timed (median of 7 repeats of 20 calls). GOP/s counts a multiply-add as two operations; the peak is the
``vpdpbusd`` microkernel of ``backends.peak`` measured in the same run. ``--reduce-multiple 64`` pads the
convolutions' reductions as ``pack_int8_layers`` does for AMX tiles, so on an AMX host those with a multiple of
16 output channels run on tiles (EfficientNet-Lite0's 1x1 16 -> 96 at 112x112 is added to show why small
reductions stay on ``vpdpbusd``: ``pack_int8_layers.AMX_MIN_REDUCTION``).
"""

from __future__ import annotations

import argparse

import numpy as np
import tvm

from backends import host_target
from backends.peak import measure_peak
from backends.x86_packed import Knobs, build_kernel, default_knobs, instruction_set
from passes.packed_layouts import ConvGeometry, conv_kernel, flatten_conv_weight, matmul_kernel, pack_matmul_weight

RESNET18_CONVS = {  # (channels in, out, kernel, stride, padding, input size): the largest by MACs
    "resnet18 conv1 7x7/2 3->64 @224": (3, 64, 7, 2, 3, 224),
    "resnet18 layer1 3x3 64->64 @56": (64, 64, 3, 1, 1, 56),
    "resnet18 layer4 3x3 512->512 @7": (512, 512, 3, 1, 1, 7),
    "efficientnet-lite0 1x1 16->96 @112": (16, 96, 1, 1, 0, 112),
}


def matmul_case(m: int, k: int, n: int, rng):
    a = rng.integers(0, 256, (m, k), dtype=np.uint8)
    w = rng.integers(-128, 128, (k, n), dtype=np.int8)
    return matmul_kernel(m, k, n), [a, pack_matmul_weight(w)], a.astype(np.int64) @ w.astype(np.int64), 2 * m * k * n


def conv_case(cin: int, cout: int, kernel: int, stride: int, pad: int, size: int, rng, multiple: int = 4):
    import torch

    geometry = ConvGeometry(cin, size, size, (kernel, kernel), (stride, stride), (pad,) * 4, (1, 1))
    w = rng.integers(-128, 128, (cout, cin, kernel, kernel), dtype=np.int8)
    x = rng.integers(0, 256, (1, cin, size, size), dtype=np.uint8)
    as_float = lambda a: torch.from_numpy(a.astype(np.float64))  # noqa: E731  (exact: sums stay below 2^53)
    expected = torch.nn.functional.conv2d(as_float(x), as_float(w), stride=stride, padding=pad).numpy().astype(np.int64)
    inputs = [x, flatten_conv_weight(w, multiple), geometry.reduce_offsets(multiple)]
    return (conv_kernel(geometry, cout, reduce_multiple=multiple), inputs, expected,
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
    parser.add_argument("--reduce-multiple", type=int, default=4,
                        help="pad conv reductions to this multiple (64: AMX tiles where the host has them)")
    args = parser.parse_args()
    target = host_target(args.threads)
    default = default_knobs(target)
    knobs = Knobs(args.rows or default.rows, args.blocks or default.blocks)
    peak = measure_peak(target)
    amx = f", AMX tiles {peak.amx_int8_gops} GOP/s" if peak.amx_int8_gops else ""
    print(f"peak ({args.threads} threads): int8 {peak.int8_gops} GOP/s ({peak.int8_instruction}){amx}, "
          f"fp32 {peak.fp32_gflops} GFLOP/s ({peak.fp32_instruction}); int8 step: {instruction_set(target)}; knobs {knobs}")
    rng = np.random.default_rng(0)
    cases = {"matmul 128x768x768": matmul_case(128, 768, 768, rng)}
    cases.update({name: conv_case(*shape, rng, args.reduce_multiple) for name, shape in RESNET18_CONVS.items()})
    for name, (func, inputs, expected, ops) in cases.items():
        gops, exact, seconds = run(func, inputs, expected, ops, target, knobs)
        fraction = f"{gops / peak.int8_gops:.0%} of int8 peak" if peak.int8_gops else "no int8 peak"
        print(f"{name:36s} {seconds * 1e6:9.1f} us  {gops:7.1f} GOP/s  {fraction}  exact={exact}", flush=True)


if __name__ == "__main__":
    main()
