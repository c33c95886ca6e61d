"""MobileNetV3-Small and EfficientNet-B0 (random weights): float compiles match PyTorch (max relative
error <= 1e-4) on the example photo and on held-out views; the held-out views are not calibration inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import compiler
import models
from models import calibration, data, efficientnet_b0, mobilenet_v3_small

from .conftest import max_rel_err

TOLERANCE = 1e-4


PREPROCESS = {"mobilenet-v3-small": mobilenet_v3_small.preprocess, "efficientnet-b0": efficientnet_b0.preprocess}


@pytest.fixture(scope="module")
def imported():
    """Each model loaded and imported once for the module's tests (torch.export of EfficientNet-B0 is slow)."""
    cache = {}

    def get(name: str):
        if name not in cache:
            case = models.get(name)
            cache[name] = case, compiler.import_model(case.module, example_inputs=case.example_inputs,
                                                      input_names=case.input_names)
        return cache[name]

    return get


@pytest.mark.parametrize("name", list(PREPROCESS))
def test_float_compile_matches_pytorch(name, imported):
    case, model = imported(name)
    compiled = compiler.compile(model)
    inputs = [case.example_inputs[0].numpy()] + [PREPROCESS[name](v) for v in data.held_out_views(2).values()]
    for x in inputs:
        with torch.no_grad():
            expected = case.module(torch.from_numpy(x)).numpy()
        actual = compiled.run(x)["output_0"]
        assert actual.shape == (1, 1000)
        assert max_rel_err(actual, expected) <= TOLERANCE


def test_random_weights_are_seeded_and_batchnorm_is_not_trivial():
    for name in ("mobilenet-v3-small", "efficientnet-b0"):
        first, second = models.get(name).module, models.get(name).module
        for (key, a), b in zip(first.state_dict().items(), second.state_dict().values()):
            assert torch.equal(a, b), key
        norms = [m for m in first.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        assert norms and all(not m.training for m in first.modules())
        assert all(m.running_mean.abs().max() > 0 and not torch.allclose(m.running_var, torch.ones(1))
                   for m in norms)


def test_held_out_views_are_seeded_and_differ_from_calibration_inputs():
    views = data.held_out_views(6)
    assert list(views) == list(data.held_out_views(6))
    assert all(v.dtype == np.uint8 and v.shape == (256, 256, 3) for v in views.values())
    assert all(np.array_equal(v, w) for v, w in zip(views.values(), data.held_out_views(6).values()))
    calibration = [data.imagenet_preprocess(p) for p in data.photos().values()]
    calibration += [x[..., ::-1] for x in calibration]
    for view in views.values():
        x = data.imagenet_preprocess(view)
        assert min(np.abs(x - c).mean() for c in calibration) > 0.05


COSINE_FLOOR = {"mobilenet-v3-small": 0.97, "efficientnet-b0": 0.90}
"""Measured minimum over the 8 held-out views, with margin (``benchmarks/quantization_quality.py``-style run,
2026-11-25): MobileNetV3-Small 0.9804 (mean 0.9867), EfficientNet-B0 0.9133 (mean 0.9486). The QDQ simulation
itself reaches 0.9701 / 0.9198 there: the loss is W8A8 on random weights, not the lowering."""


@pytest.mark.parametrize("name", list(PREPROCESS))
def test_w8a8_is_integer_only_passes_the_oracle_and_follows_float_on_held_out_photos(name, imported):
    from compiler.build import build
    from compiler.quantization.oracle import check, run_oracle
    from compiler.quantization.quantize import lower, quantize

    case, imported = imported(name)
    samples = calibration.samples(name)
    quantized = quantize(imported, samples, "w8a8")
    lowered, _ = lower(quantized, strict=True)  # any float island would raise
    production = build(lowered)
    check(run_oracle(quantized, lowered, production, samples[:1]))
    model = production.model(imported)
    cosines = []
    for x in calibration.evaluation_images(name):
        with torch.no_grad():
            expected = case.module(torch.from_numpy(x)).numpy().ravel().astype(np.float64)
        actual = model.run(x)["output_0"].ravel().astype(np.float64)
        cosines.append(actual @ expected / np.linalg.norm(actual) / np.linalg.norm(expected))
    assert len(cosines) == 8 and min(cosines) >= COSINE_FLOOR[name], cosines
