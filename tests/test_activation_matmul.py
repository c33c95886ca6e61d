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
