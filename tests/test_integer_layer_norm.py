"""The integer layernorm (passes/integer_layer_norm.py): its error bound against exact normalization, its kernel
bit for bit against its numpy twin on this CPU and on AVX2-only and plain x86 code, the per-channel affine,
and a post-LN block lowered with no float island whose wrong affine the oracle catches."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import tvm

import compiler
from backends import host_target
from compiler.build import build
from compiler.quantization.oracle import run_oracle
from compiler.quantization.quantize import lower, quantize
from passes import integer_layer_norm
from passes.integer_layer_norm import FRACTION_BITS, Params


def _rows(rng, n: int) -> np.ndarray:
    """Rows of very different spreads on the 2^23 grid, a constant one and one with a single outlier."""
    spreads = np.array([2.0**22, 2.0**16, 2.0**10, 40.0, 3.0])
    rows = rng.standard_normal((len(spreads), n)) * spreads[:, None] + rng.integers(-2**20, 2**20, (len(spreads), 1))
    rows = np.clip(np.round(rows), -(2**23 - 1), 2**23 - 1)
    constant = np.full((1, n), 12345.0)
    outlier = np.zeros((1, n))
    outlier[0, 3] = 2**23 - 1
    return np.concatenate([rows, constant, outlier]).astype(np.int32)


@pytest.mark.parametrize("n", [24, 384, 1000])
def test_normalized_values_stay_within_the_stated_error(n):
    v = _rows(np.random.default_rng(n), n)
    for epsilon in (0, 7):
        u = integer_layer_norm.reference(v, Params(epsilon))
        x = v.astype(np.float64)
        std = np.sqrt(x.var(axis=-1, keepdims=True) + epsilon)
        exact = (x - x.mean(axis=-1, keepdims=True)) / np.where(std > 0, std, 1)
        error = np.abs(u / 2.0**FRACTION_BITS - exact).max(axis=-1)
        for row, root in enumerate(std[:, 0]):
            if root > 0:
                assert error[row] <= integer_layer_norm.normalized_error(n, root), (row, root, error[row])
        assert (u[5] == 0).all()  # a constant row normalizes to 0, whatever its epsilon


@pytest.mark.parametrize("mcpu", [None, "haswell", "x86-64"])
def test_kernel_matches_its_numpy_twin_bit_for_bit(mcpu):
    target = host_target(2) if mcpu is None else tvm.target.Target({"kind": "llvm", "mcpu": mcpu, "num-cores": 2})
    rng = np.random.default_rng(2)
    for shape in [(1, 7, 384), (24,)]:
        v = _rows(rng, shape[-1])[: int(np.prod(shape[:-1]))].reshape(shape) if len(shape) > 1 else \
            _rows(rng, shape[-1])[1]
        params = Params(3)
        library = tvm.compile(tvm.IRModule({"main": integer_layer_norm.kernel(shape, params)
                                            .with_attr("global_symbol", "main")}), target=target)
        out = tvm.runtime.tensor(np.zeros(shape, np.int32))
        library["main"](tvm.runtime.tensor(v), out)
        np.testing.assert_array_equal(out.numpy(), integer_layer_norm.reference(v, params))


def test_affine_constants_put_gamma_u_plus_beta_on_the_output_grid():
    rng = np.random.default_rng(3)
    n = 64
    gamma = np.concatenate([rng.normal(0, 2, n - 3), [0.0, -1e-9, 1e-7]])
    beta = np.concatenate([rng.normal(0, 1, n - 3), [3.0, -2.0, 5e3]])
    u = rng.integers(-8 * 2**FRACTION_BITS, 8 * 2**FRACTION_BITS, (32, n)).astype(np.int64)
    for scale, zero in ((0.05, 128), (integer_layer_norm.fine_grid(gamma, beta, n), 0)):
        assert integer_layer_norm.fits(gamma, beta, scale, n)
        m, c, shift = integer_layer_norm.affine_constants(gamma, beta, scale, zero)
        q = ((u * m + c) >> shift) + zero
        exact = (gamma * u / 2.0**FRACTION_BITS + beta) / scale + zero
        assert np.abs(q - exact).max() <= 0.5 + 1e-3


class _PostLayerNormBlock(torch.nn.Module):
    """A transformer encoder's shape: layernorm of the input (float, ahead of the integer part), a residual
    around a linear into a second layernorm, and a linear reading that."""

    def __init__(self, width: int = 32):
        super().__init__()
        self.norm_in, self.norm = torch.nn.LayerNorm(width), torch.nn.LayerNorm(width)
        self.inner, self.out = torch.nn.Linear(width, width), torch.nn.Linear(width, 8)
        with torch.no_grad():
            self.norm.weight.uniform_(0.5, 2.0)
            self.norm.bias.uniform_(-0.5, 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm_in(x)
        return self.out(self.norm(h + self.inner(h)))


def test_post_layer_norm_block_is_integer_and_the_oracle_catches_a_wrong_affine(monkeypatch):
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    samples = [{"x": (rng.standard_normal((1, 12, 32)) * 3).astype(np.float32)} for _ in range(6)]
    imported = compiler.import_model(_PostLayerNormBlock().eval(),
                                     example_inputs=(torch.from_numpy(samples[0]["x"]),), input_names=["x"])
    quantized = quantize(imported, samples[:4], "w8a8")
    lowered, _ = lower(quantized, strict=True)  # the residual add and the second layernorm are integer
    assert any(integer_layer_norm.PARAMS_ATTRIBUTE in (f.attrs or {}) for f in lowered.functions.values())
    report = run_oracle(quantized, lowered, build(lowered), samples[4:])
    assert report.ok, report.summary()
    real = integer_layer_norm.affine_constants

    def off(gamma, beta, scale, zero):  # every channel's gamma 4% too large
        multipliers, offsets, shift = real(gamma, beta, scale, zero)
        return (multipliers * 1.04).astype(np.int64), offsets, shift

    monkeypatch.setattr(integer_layer_norm, "affine_constants", off)
    wrong, _ = lower(quantized)
    report = run_oracle(quantized, wrong, build(wrong), samples[4:])
    failed = {row.producer for row in report.rows if not row.ok}
    assert report.first_failure is not None and failed == {"nn.layer_norm"}, report.summary()
