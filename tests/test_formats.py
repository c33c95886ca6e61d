"""Number formats for ``qc report --formats``: the element rounding matches ml_dtypes value by value, the MX
blocks share a power of two, and the per-layer table orders formats by their precision."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
import torch

from compiler.errors import CompilerError
from compiler.quantization.formats import E2M1, E2M3, E4M3, E5M2, FORMATS, simulate, sqnr_db

RNG = np.random.default_rng(0)


@pytest.mark.parametrize("element, dtype", [(E4M3, ml_dtypes.float8_e4m3fn), (E5M2, ml_dtypes.float8_e5m2),
                                            (E2M3, ml_dtypes.float6_e2m3fn), (E2M1, ml_dtypes.float4_e2m1fn)])
def test_float_elements_round_as_ml_dtypes_casts(element, dtype):
    grid = np.linspace(-element.max_value, element.max_value, 200001, dtype=np.float32)
    values = np.unique(grid.astype(dtype).astype(np.float32))  # every element of the format (and some more)
    assert values.max() == element.max_value and len(values) >= 15
    ties = ((values[1:].astype(np.float64) + values[:-1]) / 2).astype(np.float32)  # exactly halfway: to even
    x = np.concatenate([values, ties, RNG.uniform(-element.max_value, element.max_value, 20000).astype(np.float32),
                        (RNG.standard_normal(20000) * 2.0 ** RNG.integers(-12, 4, 20000)).astype(np.float32)])
    x = x[np.abs(x) <= element.max_value]
    np.testing.assert_array_equal(element.round(x), x.astype(dtype).astype(np.float64))
    assert element.round(np.array([1e9, -1e9])).tolist() == [element.max_value, -element.max_value]  # saturates


def test_mx_blocks_share_a_power_of_two_and_saturate():
    x = np.zeros(70)
    x[:32] = np.linspace(-6, 6, 32)  # amax 6: X = 2^(2 - 2) = 1, FP4 elements as they are after rounding
    x[32:64] = np.linspace(0, 7, 32)  # amax 7: X = 1 too (floor(log2 7) = 2): 7 saturates to 6
    x[64:] = 1e-3 * np.arange(1, 7)  # a short last block of its own scale: 2^(floor(log2 0.006) - 2)
    y = simulate("mxfp4", x)
    np.testing.assert_array_equal(y[:32], E2M1.round(x[:32]))
    assert y[63] == 6.0 and y[32] == 0.0
    scale = 2.0 ** (np.floor(np.log2(0.006)) - 2)
    np.testing.assert_array_equal(y[64:], E2M1.round(x[64:] / scale) * scale)
    assert np.array_equal(simulate("mxint8", np.zeros((2, 64)), axis=1), np.zeros((2, 64)))
    # blocks run along the axis asked for: a large value in one column scales only its own blocks
    m = RNG.standard_normal((64, 3))
    m[5, 0] = 1000.0
    blocked = simulate("mxint8", m, axis=0)
    np.testing.assert_array_equal(blocked[:, 1:], simulate("mxint8", m[:, 1:], axis=0))
    assert np.abs(blocked[32:, 0] - m[32:, 0]).max() < 0.02  # the second block of column 0 keeps its scale


def test_integer_formats_are_per_channel_and_symmetric():
    w = np.array([[1.0, -0.5, 0.25], [100.0, 50.0, -100.0]])
    y = simulate("int8", w, axis=0)  # one scale per row: its largest magnitude is +-127 steps exactly
    assert y[0, 0] == 1.0 and y[1, 0] == 100.0 and y[1, 2] == -100.0
    assert np.all(np.abs(y - w) <= np.array([[1 / 254], [100 / 254]]) + 1e-12)
    assert y[0, 1] == -64 / 127  # -63.5 steps: ties to even
    assert simulate("int4", w, axis=0)[0].tolist() == pytest.approx([1.0, -4 / 7, 2 / 7])  # -3.5 -> -4, 1.75 -> 2
    # on Gaussian data (SQNR dB here: int8 43.2, int4 17.9, mxint8 41.5, mxfp8_e4m3 30.4, mxfp6_e2m3 30.8,
    # mxint4 17.5, mxfp4 18.8): the INT v.s. FP crossover, integers ahead at 8 bits and floats at 4; E4M3
    # and E2M3 elements have the same 3 fraction bits, which is what a block of 32 Gaussians needs
    x = RNG.standard_normal((64, 256))
    sqnr = {name: sqnr_db(x, simulate(name, x, axis=1 if FORMATS[name].block else 0)) for name in FORMATS}
    assert sqnr["int8"] > sqnr["int4"] + 20 and sqnr["mxint8"] > sqnr["mxint4"] + 20
    assert sqnr["mxint8"] > sqnr["mxfp8_e4m3"] + 5 and sqnr["mxfp4"] > sqnr["mxint4"]
    assert abs(sqnr["mxfp8_e4m3"] - sqnr["mxfp6_e2m3"]) < 1 and sqnr["fp8_e4m3"] > sqnr["fp8_e5m2"]
    with pytest.raises(CompilerError, match="unknown number format 'fp7'"):
        simulate("fp7", x)


def test_the_formats_report_measures_each_layer_of_a_model(mnist_case):
    from compiler import import_model
    from compiler.quantization.report import format_report
    from models import mnist_cnn

    imported = import_model(mnist_case.module, example_inputs=mnist_case.example_inputs,
                            input_names=mnist_case.input_names)
    digits = [{"input": d[None]} for d in mnist_cnn.load_split()[2][:4]]
    report = format_report(imported, digits, ["int8", "int4", "mxfp8_e4m3", "mxfp4"])
    assert [r.layer for r in report.layers] == ["conv2d_0", "conv2d_1", "matmul_0"]
    for row in report.layers:
        assert row.sqnr_db["int8"] > row.sqnr_db["int4"] + 10 and row.sqnr_db["mxfp8_e4m3"] > row.sqnr_db["mxfp4"]
        assert 5 < row.sqnr_db["mxfp4"] < row.sqnr_db["int8"] < 80
    # the whole model in a format: the numpy interpreter's float logits, and a drop from them per format
    model = report.model_sqnr_db
    assert 5 < max(model["mxfp4"], model["int4"]) < model["int8"] - 10 and model["int8"] < 80
    logits = report.model_outputs
    assert len(logits["float"]) == 4 and logits["float"][0][0].shape == (1, 10)
    float_logits = mnist_case.module(torch.from_numpy(digits[0]["input"])).detach().numpy()
    np.testing.assert_allclose(logits["float"][0][0], float_logits, rtol=1e-4, atol=1e-4)


def test_per_token_and_llm_int8_keep_an_outlier_column_from_costing_the_other_features():
    from types import SimpleNamespace

    from compiler.quantization.report import _operands

    rng = np.random.default_rng(0)
    x = rng.normal(size=(1, 16, 64))
    x[0, :, 5] *= 40  # one outlier feature in every token (|x| far above 6)
    x[0, 3] *= 10  # and one loud token
    weight = rng.normal(size=(64, 32))
    stored = FORMATS["int8"].simulate(weight, 1)
    matmul = SimpleNamespace(op=SimpleNamespace(name="relax.matmul"))
    error = {}
    for name in ("int8", "int8_token", "llm_int8"):
        xs, ws = _operands(FORMATS[name], matmul, x, stored, weight)
        error[name] = np.linalg.norm(xs @ ws - x @ weight) / np.linalg.norm(x @ weight)
        if name == "llm_int8":  # the outlier column and its weight row are exact, the rest is int8
            np.testing.assert_array_equal(xs[..., 5], x[..., 5])
            np.testing.assert_array_equal(ws[5], weight[5])
            assert np.abs(xs[..., :5] - x[..., :5]).max() > 0
    # per token: the loud token's scale no longer costs the others; LLM.int8: neither does the outlier feature
    assert error["llm_int8"] < error["int8_token"] < error["int8"]
    # one scale per token, batch or not: each token's largest magnitude is exact
    batch = np.concatenate([x, x[:, ::-1] * 3])
    tokens, _ = _operands(FORMATS["int8_token"], matmul, batch, stored, weight)
    np.testing.assert_allclose(np.abs(tokens).max(axis=-1), np.abs(batch).max(axis=-1))
