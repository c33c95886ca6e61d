"""The integer softmax (passes/integer_softmax.py): its error bound against exact softmax, its kernel bit for
bit against its numpy twin on this CPU and on AVX2-only and plain x86 code, and the oracle catching it wrong."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import tvm

import compiler
from backends import host_target
from compiler.quantization.oracle import run_oracle
from compiler.quantization.quantize import lower, quantize
from compiler.build import build
from passes import integer_softmax
from passes.integer_softmax import Params


def _exact(scores: np.ndarray, scale: float, keep: np.ndarray | None) -> np.ndarray:
    x = scores.astype(np.float64) * scale
    if keep is not None:
        x = np.where(keep, x, -np.inf)
    top = x.max(axis=-1, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    e = np.exp(x - top)
    e = np.where(np.isfinite(x) | (keep is None), e, 0.0)
    total = e.sum(axis=-1, keepdims=True)
    uniform = np.full_like(x, 1.0 / x.shape[-1])
    return np.where(total > 0, e / np.where(total > 0, total, 1), uniform)


@pytest.mark.parametrize("n", [1, 10, 128, 384])
def test_probabilities_stay_within_the_stated_error_of_exact_softmax(n):
    rng = np.random.default_rng(n)
    out_scale = 1 / 255
    for scale in (0.0023, 0.05, 0.8):  # sharp to flat distributions
        scores = rng.integers(-int(12 / scale), int(12 / scale), (64, n)).astype(np.int32)
        keep = rng.random((64, n)) > 0.3
        keep[0] = False  # a row with every score dropped comes out uniform
        for mask in (None, keep):
            q = integer_softmax.reference(scores, mask, Params.of(scale, out_scale, 0, 0, 255, "uint8"))
            exact = _exact(scores, scale, mask)
            worst = np.abs(q.astype(np.float64) - exact / out_scale).max()
            assert worst <= 0.5 + integer_softmax.max_error(n) / out_scale, (scale, worst)
            if mask is not None:
                live = mask.any(axis=-1)  # a dropped score in a row with a kept one gets nothing
                assert (q[live][~mask[live]] == 0).all()
    assert integer_softmax.max_error(128) / out_scale < 0.2  # MiniLM's rows: under a fifth of a step


@pytest.mark.parametrize("mcpu", [None, "haswell", "x86-64"])
def test_kernel_matches_its_numpy_twin_bit_for_bit(mcpu):
    target = host_target(2) if mcpu is None else tvm.target.Target({"kind": "llvm", "mcpu": mcpu, "num-cores": 2})
    rng = np.random.default_rng(1)
    for shape, keep_shape, zero in [((1, 3, 16, 32), (1, 1, 16, 32), 0), ((2, 10), None, -128)]:
        scores = rng.integers(-40000, 40000, shape).astype(np.int32)
        keep = rng.random(keep_shape) > 0.2 if keep_shape else None
        dtype = "uint8" if zero == 0 else "int8"
        params = Params.of(0.0007, 1 / 255, zero, int(np.iinfo(dtype).min), int(np.iinfo(dtype).max), dtype)
        library = tvm.compile(tvm.IRModule({"main": integer_softmax.kernel(shape, keep_shape, params)
                                            .with_attr("global_symbol", "main")}), target=target)
        out = tvm.runtime.tensor(np.zeros(shape, dtype))
        library["main"](*[tvm.runtime.tensor(a) for a in (scores, keep) if a is not None], out)
        np.testing.assert_array_equal(out.numpy(), integer_softmax.reference(scores, keep, params))


class _Attention(torch.nn.Module):
    def __init__(self, width: int = 16):
        super().__init__()
        self.q, self.k, self.v, self.out = (torch.nn.Linear(width, width) for _ in range(4))
        self.width = width

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        q, k, v = self.q(x), self.k(x), self.v(x)
        scores = q @ k.transpose(-1, -2) / self.width**0.5
        scores = scores + torch.where(mask[:, None, :] > 0, 0.0, torch.finfo(torch.float32).min)
        return self.out(torch.softmax(scores, dim=-1) @ v)


def test_masked_attention_softmax_is_integer_and_the_oracle_catches_a_wrong_one(monkeypatch):
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    samples = []
    for _ in range(6):
        mask = np.ones((1, 16), np.int64)
        mask[0, rng.integers(4, 16):] = 0
        samples.append({"x": rng.standard_normal((1, 16, 16)).astype(np.float32), "mask": mask})
    imported = compiler.import_model(_Attention().eval(), example_inputs=(torch.from_numpy(samples[0]["x"]),
                                                                          torch.from_numpy(samples[0]["mask"])),
                                     input_names=["x", "mask"])
    quantized = quantize(imported, samples[:4], "w8a8")
    lowered, _ = lower(quantized, strict=True)  # no float island at all: the mask and softmax are integer
    assert any(integer_softmax.PARAMS_ATTRIBUTE in (f.attrs or {}) for f in lowered.functions.values())
    report = run_oracle(quantized, lowered, build(lowered), samples[4:])
    assert report.ok, report.summary()
    # the same lowering with its exponent 5% off (probabilities up to 0.05 * 8 nats off): out of its bound
    real = Params.of

    def off(scale, *rest):
        return real(scale * 1.05, *rest)

    monkeypatch.setattr(Params, "of", staticmethod(off))
    wrong, _ = lower(quantized)
    report = run_oracle(quantized, wrong, build(wrong), samples[4:])
    failed = {row.producer for row in report.rows if not row.ok}
    assert report.first_failure is not None and failed == {"nn.softmax"}, report.summary()


def test_a_policy_keeps_softmax_and_layernorm_in_float():
    from passes.check_integer_only import island_reasons
    from passes.quant_policy import PolicyError, QuantPolicy

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    samples = [{"x": rng.standard_normal((1, 16, 16)).astype(np.float32), "mask": np.ones((1, 16), np.int64)}
               for _ in range(3)]
    imported = compiler.import_model(_Attention().eval(), example_inputs=(torch.from_numpy(samples[0]["x"]),
                                                                          torch.from_numpy(samples[0]["mask"])),
                                     input_names=["x", "mask"])
    policy = QuantPolicy.from_scheme("w8a8")
    kept = QuantPolicy(policy.default, float_ops=("softmax", "layer_norm"))
    lowered, _ = lower(quantize(imported, samples, kept))
    assert "policy: relax.nn.softmax kept in float (float_ops)" in island_reasons(lowered)
    assert not any(integer_softmax.PARAMS_ATTRIBUTE in (f.attrs or {}) for f in lowered.functions.values())
    with pytest.raises(PolicyError, match="float_ops must be"):
        QuantPolicy(float_ops=("gelu",))
