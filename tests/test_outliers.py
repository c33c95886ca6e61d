"""The outlier-injected MiniLM (``models.minilm_outliers``): the same function in float, outliers that a
per-tensor activation scale cannot cover once quantized."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import compiler
import models
from models import data, minilm, minilm_outliers


def test_outlier_minilm_computes_the_same_embeddings_and_breaks_per_tensor_w8a8():
    plain, injected = models.get("minilm"), models.get("minilm-outliers")
    held_out = [minilm.tokenize([s]) for s in data.evaluation_sentences()[:12]]

    def embed(module, feeds):
        with torch.no_grad():
            return np.stack([module(*(torch.from_numpy(f[n]) for n in plain.input_names)).numpy()[0]
                             for f in feeds])

    reference = embed(plain.module, held_out)
    assert np.abs(embed(injected.module, held_out) - reference).max() < 1e-5
    # the linears' inputs carry the outliers: the LayerNorm copy's channels are k times the original's
    norm = injected.module.first_norm
    channels = list(minilm_outliers.OUTLIER_CHANNELS)
    assert torch.equal(norm.copy_weight[channels], norm.weight[channels] * minilm_outliers.OUTLIER_SCALE)
    calibration = [minilm.tokenize([s]) for s in data.sentences()[:8]]
    quantized = compiler.compile(injected.module, example_inputs=injected.example_inputs,
                                 input_names=injected.input_names, quantize="w8a8", calibration=calibration)
    agreement = minilm.embedding_agreement(reference, np.stack([quantized.run(f)["output_0"][0] for f in held_out]))
    assert agreement["cosine_mean"] < 0.95  # per-tensor scales: the remedies are measured against this


class _NormThenLinears(torch.nn.Module):
    """A LayerNorm read by two linears only (smoothable), and one read by a residual add too (not)."""

    def __init__(self):
        super().__init__()
        self.first, self.second = torch.nn.LayerNorm(16), torch.nn.LayerNorm(16)
        self.a, self.b, self.c = torch.nn.Linear(16, 8), torch.nn.Linear(16, 8), torch.nn.Linear(16, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        normed = self.first(x)
        residual = self.second(x)
        return torch.cat([self.a(normed), self.b(normed)], dim=-1) + self.c(residual) + residual


def test_smooth_quant_keeps_the_function_and_only_touches_norms_that_feed_linears():
    from compiler.quantization.calibration import prepare
    from compiler.quantization.reference import interpret
    from passes import PassError, get_pass
    from passes.quant_policy import PolicyError, QuantPolicy
    from passes.smooth_quant import smoothable

    torch.manual_seed(0)
    module = _NormThenLinears().eval()
    x = np.random.default_rng(0).standard_normal((1, 4, 16)).astype(np.float32)
    prepared = prepare(compiler.import_model(module, example_inputs=(torch.from_numpy(x),), input_names=["x"]))
    found = smoothable(prepared["main"])
    assert len(found) == 1 and sorted(next(iter(found.values()))) == ["matmul_0", "matmul_1"]
    (norm,) = found
    scale = np.linspace(0.1, 10, 16)
    smoothed = get_pass("smooth_quant")(prepared, scales={norm: scale})
    before, after = interpret(prepared, {"x": x}).outputs[0], interpret(smoothed, {"x": x}).outputs[0]
    np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-5)
    assert not np.allclose(interpret(smoothed, {"x": x}).values[norm], interpret(prepared, {"x": x}).values[norm])
    with pytest.raises(PassError, match="not smoothable"):
        get_pass("smooth_quant")(prepared, scales={"nope": scale})
    with pytest.raises(PolicyError, match="migration strength"):
        QuantPolicy(smoothing=1.5)


def test_smooth_quant_recovers_the_outlier_minilm():
    from passes.quant_policy import QuantPolicy

    plain, injected = models.get("minilm"), models.get("minilm-outliers")
    held_out = [minilm.tokenize([s]) for s in data.evaluation_sentences()[:12]]
    with torch.no_grad():
        reference = np.stack([plain.module(*(torch.from_numpy(f[n]) for n in plain.input_names)).numpy()[0]
                              for f in held_out])
    calibration = [minilm.tokenize([s]) for s in data.sentences()[:8]]
    model = compiler.compile(injected.module, example_inputs=injected.example_inputs,
                             input_names=injected.input_names, quantize=QuantPolicy(smoothing="auto"),
                             calibration=calibration)
    smoothing = model.manifest["quantization"]["smoothing"]
    assert smoothing["layer_norms"] == 12 and smoothing["alpha"] in (0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
    agreement = minilm.embedding_agreement(reference, np.stack([model.run(f)["output_0"][0] for f in held_out]))
    assert agreement["cosine_mean"] >= 0.99
