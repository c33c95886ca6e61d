"""The matmul of two uint8 activations (attention's Q x K^T and probabilities x V) on ``vpdpbusd``: exact
against numpy for every zero-point case and for a second operand read through a permutation in place."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import te

from backends import host_target
from backends.x86_packed import build_kernel
from passes.packed_layouts import matmul_activations


@pytest.mark.parametrize("shape, zeros, axes", [
    ((12, 128, 32, 128), (127, 131), (0, 2, 1)),   # Q x K^T, K read as stored
    ((12, 128, 128, 32), (0, 129), None),           # probabilities (zero point 0: no column sums) x V
    ((2, 5, 8, 20), (5, 128), None),                # zero point 128 (no row sums); 20 columns padded to 32
    ((1, 3, 12, 7), (255, 0), (2, 0, 1)),           # a permutation that also moves the leading axis
])
def test_activation_matmul_is_exact(shape, zeros, axes):
    heads, rows, reduce, columns = shape
    rng = np.random.default_rng(heads * rows)
    b_matrix = rng.integers(0, 256, size=(heads, reduce, columns)).astype(np.uint8)
    stored = b_matrix if axes is None else np.ascontiguousarray(b_matrix.transpose(np.argsort(axes)))
    assert axes is None or np.array_equal(stored.transpose(axes), b_matrix)
    a = te.placeholder((heads, rows, reduce), "uint8", "a")
    b = te.placeholder(stored.shape, "uint8", "b")
    lib = build_kernel(te.create_prim_func([a, b, matmul_activations(a, b, *zeros, axes)]), host_target(2))
    a_value = rng.integers(0, 256, size=(heads, rows, reduce)).astype(np.uint8)
    out = tvm.runtime.tensor(np.zeros((heads, rows, columns), np.int32))
    lib["main"](tvm.runtime.tensor(a_value), tvm.runtime.tensor(stored), out)
    want = (a_value.astype(np.int64) - zeros[0]) @ (b_matrix.astype(np.int64) - zeros[1])
    np.testing.assert_array_equal(out.numpy(), want)



def _centred_matmul_module(heads: int, tokens: int, depth: int, zeros: tuple[int, int]):
    """The Relax that ``lower_integer`` writes for attention scores when the operands' permutations sit right
    before their centring (as ONNX graphs give them): Q [1, S, H, D] -> (0, 2, 1, 3), K -> (0, 2, 3, 1)."""
    from tvm import relax

    builder = relax.BlockBuilder()
    q = relax.Var("q", relax.TensorType((1, tokens, heads, depth), "uint8"))
    k = relax.Var("k", relax.TensorType((1, tokens, heads, depth), "uint8"))
    with builder.function("main", [q, k]):
        with builder.dataflow():
            centred = []
            for var, axes, zero in ((q, [0, 2, 1, 3], zeros[0]), (k, [0, 2, 3, 1], zeros[1])):
                moved = builder.emit(relax.op.permute_dims(var, axes))
                wide = builder.emit(relax.op.astype(moved, "int32"))
                centred.append(builder.emit(relax.op.subtract(wide, relax.const(np.int32(zero)))))
            out = builder.emit_output(builder.emit(relax.op.matmul(*centred, out_dtype="int32")))
        builder.emit_func_output(out)
    return builder.get()


def test_permuted_operands_are_read_in_their_permuted_order_even_when_shapes_coincide():
    """As many tokens as heads: Q's permutation (tokens, heads) -> (heads, tokens) keeps its shape, so only
    the kernel's reading order tells the two apart (the first operand must be read as permuted)."""
    from tvm import relax

    from passes import get_pass

    heads = tokens = 4
    zeros = (127, 131)
    mod = _centred_matmul_module(heads, tokens, 8, zeros)
    packed = get_pass("pack_int8_layers")(mod)
    assert any(str(g.name_hint).startswith("matmul_activations") for g in packed.functions)
    rng = np.random.default_rng(1)
    q, k = (rng.integers(0, 256, size=(1, tokens, heads, 8)).astype(np.uint8) for _ in range(2))
    with host_target(2) as target:
        executable = tvm.compile(packed, target=target)
    got = relax.VirtualMachine(executable, tvm.cpu())["main"](tvm.runtime.tensor(q), tvm.runtime.tensor(k)).numpy()
    want = ((q.astype(np.int64) - zeros[0]).transpose(0, 2, 1, 3)
            @ (k.astype(np.int64) - zeros[1]).transpose(0, 2, 3, 1))
    np.testing.assert_array_equal(got, want)
