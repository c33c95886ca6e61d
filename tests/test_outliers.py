"""The outlier-injected MiniLM (``models.minilm_outliers``): the same function in float, outliers that a
per-tensor activation scale cannot cover once quantized."""

from __future__ import annotations

import numpy as np
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
