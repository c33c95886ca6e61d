"""narrow_constants: int64 constants that fit int32 travel as int32; the requantize multiplies 32 x 32 bits."""

from __future__ import annotations

import re

import numpy as np
import tvm

import compiler
from backends import host_target
from backends.x86_packed import _has_features
from models import mnist_cnn
from passes import get_pass


def _int64_constant_args(mod: tvm.IRModule) -> list[np.ndarray]:
    found = []

    def visit(expr):
        if isinstance(expr, tvm.relax.Call) and expr.op == tvm.ir.Op.get("relax.call_tir"):
            found.extend(a.value.numpy() for a in expr.args[1].fields
                         if isinstance(a, tvm.ir.expr.GenericConst) and str(a.value.dtype) == "int64")

    tvm.relax.analysis.post_order_visit(mod["main"], visit)
    return found


def test_narrowed_constants_keep_the_bits_and_the_requantize_multiplies_32_bit(mnist_imported):
    digits = mnist_cnn.load_split()[0]
    samples = [{"input": d[None]} for d in digits[:16]]
    target = host_target(2)
    narrowed = compiler.compile(mnist_imported, quantize="w8a8", calibration=samples, target=target)
    wide = compiler.compile(mnist_imported, quantize="w8a8", calibration=samples, target=target,
                            passes=[p for p in compiler.DEFAULT_PASSES if p != "narrow_constants"])
    for d in digits[100:120]:
        np.testing.assert_array_equal(narrowed.run(d[None])["output_0"], wide.run(d[None])["output_0"])
    # the dyadic multipliers (< 2^31) reach the kernels as int32: vpmuldq (AVX2 and up), no 64 x 64-bit
    # vpmullq (AVX-512 DQ) where the wide build has it
    asm = "\n".join(m.inspect_source("asm") for m in narrowed._library.mod.imports)
    wide_asm = "\n".join(m.inspect_source("asm") for m in wide._library.mod.imports)
    assert re.search(r"vpmuldq", asm) and not re.search(r"vpmullq", asm)
    assert re.search(r"vpmullq", wide_asm) or not _has_features(target, "avx512dq")


def test_only_constants_inside_int32_are_narrowed():
    bb = tvm.relax.BlockBuilder()
    x = tvm.relax.Var("x", tvm.relax.TensorType((4,), "int64"))
    with bb.function("main", [x]):
        with bb.dataflow():
            small = tvm.relax.const(np.array([1, -5, 2**31 - 1, -(2**31)], np.int64), "int64")
            large = tvm.relax.const(np.array([1, 2, 3, 2**31], np.int64), "int64")
            y = bb.emit(bb.call_te(tvm.topi.multiply, x, small))
            z = bb.emit_output(bb.call_te(tvm.topi.add, y, large))
        bb.emit_func_output(z)
    mod = get_pass("narrow_constants")(bb.finalize())
    remaining = _int64_constant_args(mod)
    assert len(remaining) == 1 and remaining[0].max() == 2**31  # the one that does not fit stays int64
    ex = tvm.compile(mod, target="llvm")
    vm = tvm.relax.VirtualMachine(ex, tvm.cpu())
    values = np.array([3, 7, 1, 1], np.int64)
    result = vm["main"](tvm.runtime.tensor(values)).numpy()
    np.testing.assert_array_equal(result, values * np.array([1, -5, 2**31 - 1, -(2**31)]) + [1, 2, 3, 2**31])
