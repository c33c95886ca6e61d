"""The integer epilogue's cost: instructions per 16 outputs of the dyadic requantize, and its share of a
packed kernel's time.

    .venv/bin/python benchmarks/epilogue.py [--mcpu znver4]

The requantize ``lower_integer`` fuses after every layer, ``clamp((acc * b + R) >> c)`` in int64 with
per-channel constants (R = offset * b + 2^(c-1); b and c stored int32 by ``narrow_constants``), then a cast to
uint8 (``passes.dyadic``), is built alone over a
[channels, 4096] int32 tile (16-lane vectors, as the write-back runs it) and its innermost loop is read from
the assembly: the instructions between the loop's label and its back-branch, per 16 outputs. Then three
1x1 convolutions of EfficientNet-Lite0 (small reductions, where the epilogue weighs most) are timed with and
without it (the ``backends.x86_packed`` kernels ``pack_int8_layers`` gives the target, 2 threads, median of
7 x 20 calls): the difference is the epilogue's share.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter

import numpy as np
import tvm
from tvm import te, tirx

from backends import host_target
from backends.x86_packed import build_kernel
from passes.pack_int8_layers import packing_for
from passes.packed_layouts import ConvGeometry, conv2d_im2col, flatten_conv_weight

CONVS = {"1x1 16->96 @112": (16, 96, 112), "1x1 24->144 @56": (24, 144, 56), "1x1 112->672 @14": (112, 672, 14)}


def requantize(acc, constant_index):
    """``lower_integer``'s requantize after ``acc`` (int32), to uint8, constants indexed per output channel,
    stored as ``narrow_constants`` leaves them (multiplier and shift int32, the rounding term int64)."""
    channels = int(acc.shape[1])
    constants = [te.placeholder((channels,), dtype, name)
                 for name, dtype in (("multiplier", "int32"), ("rounding", "int64"), ("shift", "int32"))]

    def compute(*index):
        multiplier, rounding, shift = (c[constant_index(*index)].astype("int64") for c in constants)
        value = (acc[index].astype("int64") * multiplier + rounding) >> shift
        return tirx.Cast("uint8", tirx.min(tirx.max(value, tirx.const(0, "int64")), tirx.const(255, "int64")))

    return constants, te.compute(acc.shape, compute, name="requantize")


def constants(channels: int, rng) -> list[np.ndarray]:
    multiplier = rng.integers(1, 2**30, channels)
    offset = rng.integers(-1000, 1000, channels)
    return [multiplier.astype(np.int32), offset * multiplier + 2**37, np.full(channels, 38, np.int32)]


def epilogue_instructions(target) -> tuple[float, Counter]:
    """Instructions per 16 outputs in the innermost loop of the requantize alone."""
    channels, width = 64, 4096
    acc = te.placeholder((1, channels, width), "int32", "acc")
    params, out = requantize(acc, lambda b, c, x: c)
    func = te.create_prim_func([acc, *params, out])
    from tvm import s_tir

    sch = s_tir.Schedule(tvm.IRModule({"main": func}))
    block = sch.get_sblock("requantize")
    _, channel, column = sch.get_loops(block)
    sch.vectorize(sch.split(column, [None, 16])[1])
    asm = tvm.compile(sch.mod, target=target).mod.inspect_source("asm")
    lines = [line.strip() for line in asm.splitlines()]
    best = None
    for i, line in enumerate(lines):  # each back-branch to an earlier label closes a loop: the smallest one
        jump = re.match(r"j\w+\s+(\.LBB\S+)", line)  # holding the vector multiply is the requantize's
        if not jump or f"{jump[1]}:" not in lines[:i]:
            continue
        start = lines.index(f"{jump[1]}:")
        body = [s for s in lines[start + 1:i + 1] if s and not s.startswith((".", "#")) and not s.endswith(":")]
        if any(b.startswith("vpmul") for b in body) and (best is None or len(body) < len(best)):
            best = body
    if best is None:
        return float("nan"), Counter()
    # outputs per iteration: the widening int32 -> int64 moves, 8 lanes on zmm, 4 on ymm
    widen = [b for b in best if b.startswith("vpmovsxdq")]
    outputs = sum(8 if "zmm" in b else 4 for b in widen)
    return len(best) * 16 / max(outputs, 1), Counter(b.split()[0] for b in best)


def time_conv(cin: int, cout: int, size: int, epilogue: bool, target, rng) -> float:
    packing = packing_for(target)  # the kernels pack_int8_layers gives this target (WIDE without VNNI)
    group, stored = packing.group, packing.operand or "int8"
    geometry = ConvGeometry(cin, size, size, (1, 1), (1, 1), (0, 0, 0, 0), (1, 1))
    data = te.placeholder((1, cin, size, size), "uint8", "data")
    flat = te.placeholder((cout, -(-cin // group) * group), stored, "flat")
    offsets = te.placeholder(geometry.reduce_offsets(group).shape, "int32", "offsets")
    acc = conv2d_im2col(data, flat, offsets, geometry, packing)
    args = [data, flat, offsets]
    weight = rng.integers(-128, 128, (cout, cin, 1, 1), dtype=np.int8)
    values = [rng.integers(0, 256, (1, cin, size, size), dtype=np.uint8),
              flatten_conv_weight(weight, group).astype(stored), geometry.reduce_offsets(group)]
    if epilogue:
        params, out = requantize(acc, lambda b, o, y, x: o)
        args, values = args + params, values + constants(cout, rng)
    else:
        out = acc
    lib = build_kernel(te.create_prim_func([*args, out]), target)
    tensors = [tvm.runtime.tensor(v) for v in values] + [
        tvm.runtime.tensor(np.zeros([int(d) for d in out.shape], str(out.dtype)))]
    return float(np.median(lib.mod.time_evaluator("main", tvm.cpu(), number=20, repeat=7)(*tensors).results))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mcpu", default=None, help="build for this x86 CPU (LLVM's name) instead of the host")
    args = parser.parse_args()
    target = host_target(2) if args.mcpu is None else tvm.target.Target(
        {"kind": "llvm", "mcpu": args.mcpu, "num-cores": 2})
    count, mnemonics = epilogue_instructions(target)
    print(f"target {target.attrs.get('mcpu')}: requantize loop, {count:.1f} instructions per 16 outputs: "
          + ", ".join(f"{m} {n}" for m, n in mnemonics.most_common()))
    rng = np.random.default_rng(0)
    for name, (cin, cout, size) in CONVS.items():
        bare, full = (time_conv(cin, cout, size, e, target, rng) for e in (False, True))
        print(f"{name:18s} conv alone {bare * 1e6:7.1f} us, with the requantize {full * 1e6:7.1f} us: "
              f"epilogue {1 - bare / full:.0%} of the kernel")


if __name__ == "__main__":
    main()
