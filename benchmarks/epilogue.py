"""The integer epilogue's cost: instructions per 16 outputs of the dyadic requantize, and its share of a
packed kernel's time.

    .venv/bin/python benchmarks/epilogue.py [--mcpu znver4]

The requantize ``lower_integer`` fuses after every layer (``passes.dyadic``), in both of its forms: ``int64``,
``clamp((acc * b + R) >> c)`` with per-channel constants (R = offset * b + 2^(c-1); b and c stored int32 by
``narrow_constants``), which it keeps where the int32 form's bounds do not hold (a residual sum), and
``high``, ``clamp((hi32((acc + offset) * b) + 2^(k-1)) >> k)`` in int32 (k = c - 32; ``_high_product``),
whose multiply-high ``backends.x86_high_product`` turns into two ``vpmuldq`` per vector. Each is built alone
over a [channels, 4096] int32 tile (16-lane vectors, as the write-back runs it) and its innermost loop is read
from the assembly: the instructions between the loop's label and its back-branch, per 16 outputs. Then three
1x1 convolutions of EfficientNet-Lite0 (small reductions, where the epilogue weighs most) are timed without
it and with each form (the ``backends.x86_packed`` kernels ``pack_int8_layers`` gives the target, 2
threads, median of 7 x 20 calls): the difference is the epilogue's share.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter

import numpy as np
import tvm
from tvm import te, tirx

from backends import host_target
from backends.x86_high_product import tir_pipeline
from backends.x86_packed import build_kernel
from passes.pack_int8_layers import packing_for
from passes.packed_layouts import ConvGeometry, conv2d_im2col, flatten_conv_weight

CONVS = {"1x1 16->96 @112": (16, 96, 112), "1x1 24->144 @56": (24, 144, 56), "1x1 112->672 @14": (112, 672, 14)}


FORMS = ("int64", "high")


def requantize(acc, constant_index, form: str):
    """``lower_integer``'s requantize after ``acc`` (int32), to uint8, constants indexed per output channel,
    stored as ``narrow_constants`` leaves them: ``int64`` (multiplier and shift int32, the rounding term
    int64) or ``high`` (offset, multiplier, rounding and shift int32)."""
    channels = int(acc.shape[1])
    names = ((("multiplier", "int32"), ("rounding", "int64"), ("shift", "int32")) if form == "int64" else
             (("offset", "int32"), ("multiplier", "int32"), ("rounding", "int32"), ("shift", "int32")))
    constants = [te.placeholder((channels,), dtype, name) for name, dtype in names]

    def compute(*index):
        per_channel = [c[constant_index(*index)] for c in constants]
        if form == "int64":
            multiplier, rounding, shift = (c.astype("int64") for c in per_channel)
            value = (acc[index].astype("int64") * multiplier + rounding) >> shift
            return tirx.Cast("uint8", tirx.min(tirx.max(value, tirx.const(0, "int64")), tirx.const(255, "int64")))
        offset, multiplier, rounding, shift = per_channel
        high = tirx.Cast("int32", ((acc[index] + offset).astype("int64") * multiplier.astype("int64"))
                         >> tirx.const(32, "int64"))
        return tirx.Cast("uint8", tirx.min(tirx.max((high + rounding) >> shift, 0), 255))

    return constants, te.compute(acc.shape, compute, name="requantize")


def constants(channels: int, rng, form: str) -> list[np.ndarray]:
    multiplier = rng.integers(2**30, 2**31, channels)
    offset = rng.integers(-1000, 1000, channels)
    if form == "int64":
        return [multiplier.astype(np.int32), offset * multiplier + 2**37, np.full(channels, 38, np.int32)]
    return [offset.astype(np.int32), multiplier.astype(np.int32), np.full(channels, 2**5, np.int32),
            np.full(channels, 6, np.int32)]


def epilogue_instructions(target, form: str) -> tuple[float, Counter]:
    """Instructions per 16 outputs in the innermost loop of the requantize alone."""
    channels, width = 64, 4096
    acc = te.placeholder((1, channels, width), "int32", "acc")
    params, out = requantize(acc, lambda b, c, x: c, form)
    func = te.create_prim_func([acc, *params, out])
    from tvm import s_tir

    sch = s_tir.Schedule(tvm.IRModule({"main": func}))
    block = sch.get_sblock("requantize")
    _, channel, column = sch.get_loops(block)
    sch.vectorize(sch.split(column, [None, 16])[1])
    asm = tvm.compile(sch.mod, target=target, tir_pipeline=tir_pipeline(target)).mod.inspect_source("asm")
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
    # outputs per iteration: on zmm both forms multiply each output once with vpmuldq (8 products each); on
    # ymm LLVM also builds the multiply from vpmuludq and fix-ups, so the outputs are not counted there
    products = [b for b in best if b.startswith("vpmuldq")]
    if not products or not all("zmm" in b for b in products):
        return float("nan"), Counter(b.split()[0] for b in best)
    return len(best) * 16 / (8 * len(products)), Counter(b.split()[0] for b in best)


def time_conv(cin: int, cout: int, size: int, form: str | None, target, rng) -> float:
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
    if form is not None:
        params, out = requantize(acc, lambda b, o, y, x: o, form)
        args, values = args + params, values + constants(cout, rng, form)
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
    for form in FORMS:
        count, mnemonics = epilogue_instructions(target, form)
        per_16 = f"{count:.1f} instructions per 16 outputs" if count == count else (
            f"{sum(mnemonics.values())} instructions (outputs per iteration not counted off zmm)")
        print(f"target {target.attrs.get('mcpu')}, {form:5s} requantize loop: {per_16}: "
              + ", ".join(f"{m} {n}" for m, n in mnemonics.most_common()))
    rng = np.random.default_rng(0)
    for name, (cin, cout, size) in CONVS.items():
        bare, *full = (time_conv(cin, cout, size, form, target, rng) for form in (None, *FORMS))
        print(f"{name:18s} conv alone {bare * 1e6:7.1f} us; with the requantize "
              + ", ".join(f"{form} {t * 1e6:7.1f} us (epilogue {1 - bare / t:.0%})" for form, t in zip(FORMS, full)))


if __name__ == "__main__":
    main()
