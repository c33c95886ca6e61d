"""The int32 requantize: lower_integer's multiply-high form equals the int64 dyadic rescale bit for bit, and
backends.x86_high_product makes it two vpmuldq per vector, exactly, on zmm and ymm."""

from __future__ import annotations

import re

import numpy as np
import pytest
import tvm
from tvm import s_tir, te, tirx

import compiler
from backends import host_target
from backends.x86_high_product import tir_pipeline
from models import mnist_cnn
from passes.dyadic import dyadic, rescale
from tests.conftest import AVX2_TARGET, PLAIN_TARGET

ZMM_TARGET = tvm.target.Target({"kind": "llvm", "mcpu": "skylake-avx512", "num-cores": 2})


def _high_form(v: np.ndarray, b: int, c: int) -> np.ndarray:
    """``lower_integer._high_product``'s arithmetic in numpy: v lifted by 2^l (l = max(0, 33 - c)),
    hi32(v * b), + 2^(k-1), >> k (k = c + l - 32)."""
    lift = max(0, 33 - c)
    k = c + lift - 32
    high = (((v.astype(np.int32) << np.int32(lift)).astype(np.int64) * b) >> 32).astype(np.int32)
    return (high + np.int32(1 << (k - 1))) >> np.int32(k)


def test_the_high_half_rounds_as_the_int64_rescale():
    rng = np.random.default_rng(0)
    edges = np.array([0, 1, -1, 2**31 - 1, -(2**31) + 1, 2**30, -(2**30), 12345, -12345], np.int64)
    for scale in [1e-2, 3.7e-3, 0.25, 0.49, 1e-6, 2.0**-33, 0.123456789, 0.6, 3.0, 1000.5]:
        d = dyadic(scale)
        limit = 2**31 >> max(0, 33 - d.c)  # |v| the lift keeps inside int32 (c < 33: a 4-bit layer's scales)
        v = np.concatenate([edges[np.abs(edges) < limit], rng.integers(-limit + 1, limit, 20000)]).astype(np.int32)
        # values where v * b sits just below / above a rounding boundary of 2^c
        ties = (np.arange(-50, 50, dtype=np.int64) << d.c) // d.b
        near = np.clip(np.concatenate([ties - 1, ties, ties + 1]), -limit + 1, limit - 1)
        v = np.concatenate([v, near]).astype(np.int32)
        np.testing.assert_array_equal(_high_form(v, d.b, d.c), rescale(v, d), err_msg=f"scale {scale}")


def test_a_residual_branch_rescaled_in_int32_equals_its_int64_form():
    """Each branch of a residual sum, ((q + offset) * b + 2^(d-1)) >> d with d = c - 16 (16 fraction bits),
    through the high half as ``_requantize_sum`` emits it where the bounds allow: every uint8 code, offsets
    of +-255, the scales of real residual adds and their extremes."""
    q = np.arange(256, dtype=np.int64)
    for scale in [1.37, 0.51, 0.98, 2.3, 0.0625, 7.9]:  # branch scale / output scale
        d = dyadic(scale * 2**16)  # the branch to 16 fraction bits of the output's unit
        for offset in (-255, -128, -1, 0, 77, 255):
            exact = ((q + offset) * d.b + (1 << (d.c - 1))) >> d.c
            np.testing.assert_array_equal(_high_form((q + offset).astype(np.int32), d.b, d.c), exact,
                                          err_msg=f"scale {scale}, offset {offset}")


def _requantize(lanes: int):
    """A [8, 16 * lanes] int32 -> uint8 requantize in the form lower_integer emits, vectorized ``lanes`` wide."""
    acc = te.placeholder((8, 16 * lanes), "int32", "acc")
    offset, multiplier, rounding, shift = (te.placeholder((8,), "int32", n) for n in ("off", "b", "r", "k"))

    def compute(c, x):
        high = tirx.Cast("int32", ((acc[c, x] + offset[c]).astype("int64") * multiplier[c].astype("int64"))
                         >> tirx.const(32, "int64"))
        return tirx.Cast("uint8", tirx.min(tirx.max((high + rounding[c]) >> shift[c], 0), 255))

    out = te.compute((8, 16 * lanes), compute, name="requantize")
    sch = s_tir.Schedule(tvm.IRModule({"main": te.create_prim_func([acc, offset, multiplier, rounding, shift, out])}))
    _, column = sch.get_loops(sch.get_sblock("requantize"))
    sch.vectorize(sch.split(column, [None, lanes])[1])
    return sch.mod


@pytest.mark.parametrize("target", [ZMM_TARGET, AVX2_TARGET, PLAIN_TARGET], ids=["zmm", "ymm", "plain"])
@pytest.mark.parametrize("lanes", [16, 64, 7, 14, 28], ids=lambda n: f"{n} lanes")  # 7, 14, 28: padded to registers
def test_the_rewrite_multiplies_high_with_vpmuldq_exactly(target, lanes):
    rng = np.random.default_rng(lanes)
    acc = rng.integers(-(2**24), 2**24, (8, 16 * lanes)).astype(np.int32)
    acc[0, :4] = [2**31 - 2**20 - 1, -(2**31) + 2**20 + 1, 0, -1]
    offset = rng.integers(-(2**20), 2**20, 8).astype(np.int32)
    multiplier = rng.integers(2**30, 2**31, 8).astype(np.int32)
    shift = rng.integers(1, 20, 8).astype(np.int32)
    rounding = (np.int32(1) << (shift - 1)).astype(np.int32)
    lib = tvm.compile(_requantize(lanes), target=target, tir_pipeline=tir_pipeline(target))
    asm = lib.mod.inspect_source("asm")
    if target is not PLAIN_TARGET:
        assert re.search(r"vpmuldq", asm) and not re.search(r"vpmullq|vpmovsxdq", asm)
    if target is ZMM_TARGET:  # (7 lanes fit a ymm, and take one)
        assert re.search(r"vpmuldq\s+%zmm" if lanes > 8 else r"vpmuldq\s+%ymm", asm)
    out = tvm.runtime.empty((8, 16 * lanes), "uint8")
    lib(*(tvm.runtime.tensor(a) for a in (acc, offset, multiplier, rounding, shift)), out)
    high = (((acc.astype(np.int64) + offset[:, None]) * multiplier[:, None]) >> 32).astype(np.int32)
    expected = np.clip((high + rounding[:, None]) >> shift[:, None], 0, 255)
    np.testing.assert_array_equal(out.numpy(), expected)


def _shifts(mod: tvm.IRModule) -> list[tuple[str, int | None]]:
    """(dtype, constant shift or None) of every right_shift in main."""
    found = []

    def visit(expr):
        if isinstance(expr, tvm.relax.Call) and expr.op == tvm.ir.Op.get("relax.right_shift"):
            amount = expr.args[1]
            value = amount.value.numpy() if isinstance(amount, tvm.ir.expr.GenericConst) else None
            found.append((str(expr.ty.dtype), int(value) if value is not None and value.ndim == 0 else None))

    tvm.relax.analysis.post_order_visit(mod["main"], visit)
    return found


def test_lower_integer_requantizes_each_layer_through_the_high_half(mnist_imported):
    from compiler.api import _quantized
    from compiler.quantization.quantize import lower

    digits = mnist_cnn.load_split()[0]
    lowered, _ = lower(_quantized(mnist_imported, "w8a8", [{"input": d[None]} for d in digits[:16]], host_target(2)))
    shifts = _shifts(lowered)
    layers = sum(1 for name, _ in shifts if name == "int64")
    high = [s for s in shifts if s == ("int64", 32)]
    # every layer of this CNN has one requantize of one term: each an int64 >> 32 (the multiply-high) then
    # an int32 shift by the per-channel k, none left in int64 with its full shift
    assert high and len(high) == layers
    assert sum(1 for name, _ in shifts if name == "int32") == len(high)
