"""check_integer_only: passes an integer graph, names the float ops of a simulated (QDQ) one."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import relax

from compiler.quantization.quantize import quantize
from models import mnist_cnn
from passes import PassError, get_pass
from passes.check_integer_only import IntegerOnlyError, float_islands


def _integer_conv(island: bool = False) -> tvm.IRModule:
    """quantize -> int32 conv -> (optional float softmax island -> quantize) -> float epilogue."""
    builder = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 2, 4, 4), "float32"))
    weight = relax.const(np.ones((3, 2, 1, 1), np.int32))
    with builder.function("main", [x]):
        with builder.dataflow():
            q = builder.emit(relax.op.quantize(x, relax.const(np.float32(0.1)), relax.const(np.int8(0)), out_dtype="int8"))
            acc = builder.emit(relax.op.nn.conv2d(relax.op.astype(q, "int32"), weight, out_dtype="int32"))
            if island:
                probabilities = builder.emit(relax.op.nn.softmax(relax.op.astype(acc, "float32"), axis=1))
                acc = builder.emit(relax.op.quantize(probabilities, relax.const(np.float32(1 / 255)),
                                                     relax.const(np.int8(0)), out_dtype="int8"))
            y = builder.emit(relax.op.multiply(relax.op.astype(acc, "float32"), relax.const(np.float32(0.01))))
            out = builder.emit_output(y)
        builder.emit_func_output(out)
    return builder.get()


def test_an_integer_graph_with_float_prologue_and_epilogue_passes():
    mod = _integer_conv()
    assert get_pass("check_integer_only")(mod) is mod


def test_a_float_island_is_named_unless_declared():
    mod = _integer_conv(island=True)
    with pytest.raises(IntegerOnlyError, match=r"relax.nn.softmax"):
        get_pass("check_integer_only")(mod)
    assert [op for op, _ in float_islands(mod)] == ["relax.astype", "relax.nn.softmax"]
    get_pass("check_integer_only")(mod, allowed=["relax.nn.softmax", "relax.astype"])


def test_simulated_quantization_is_not_integer_only(mnist_imported):
    imported = mnist_imported
    digits = mnist_cnn.load_split()[0][:4]
    qdq = quantize(imported, [{"input": d[None]} for d in digits]).imported.mod
    offenders = [op for op, _ in float_islands(qdq)]
    assert offenders.count("relax.nn.conv2d") == 2 and "relax.nn.relu" in offenders


def test_a_graph_without_quantize_is_refused():
    builder = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((2,), "float32"))
    with builder.function("main", [x]):
        with builder.dataflow():
            out = builder.emit_output(relax.op.add(x, x))
        builder.emit_func_output(out)
    with pytest.raises(PassError, match="no quantize"):
        get_pass("check_integer_only")(builder.get())
