"""Integer quantization (calibrate, QDQ, lower) of the real MNIST CNN, through the API and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import compiler
from models import mnist_cnn
from passes.check_integer_only import StrictIntegerError
from passes.quant_policy import QuantPolicy

from .conftest import qc


@pytest.fixture(scope="module")
def split():
    return mnist_cnn.load_split()


def _accuracy(model, x, y) -> float:
    return float(np.mean([model.run(d[None])["output_0"].argmax() == label for d, label in zip(x, y)]))


@pytest.mark.parametrize("observer", ["minmax", "mse"])
def test_w8a8_keeps_mnist_accuracy_within_half_a_point(mnist_case, split, observer):
    x_train, _, x_test, y_test = split
    with torch.no_grad():
        float_accuracy = float((mnist_case.module(torch.from_numpy(x_test)).numpy().argmax(1) == y_test).mean())
    model = compiler.compile(mnist_case.module, example_inputs=mnist_case.example_inputs,
                             input_names=mnist_case.input_names, quantize=QuantPolicy.from_scheme("w8a8", observer),
                             calibration=({"input": d[None]} for d in x_train[:64]))
    assert _accuracy(model, x_test, y_test) >= float_accuracy - 0.005
    layers = model.manifest["quantization"]["layers"]
    assert list(layers) == ["conv2d_0", "conv2d_1", "matmul_0"]
    assert all(spec["weight_bits"] == 8 and spec["activation_bits"] == 8 for spec in layers.values())
    assert model.manifest["quantization"]["mode"] == "integer" and model.manifest["quantization"]["float_islands"] == {}
    # conv + bias + requantize + ReLU clamp + cast become one kernel; so do matmul + bias + dequantize
    assert model.manifest["kernels"] < model.manifest["kernels_before_fusion"]


def test_cli_quantizes_from_an_npz_calibration_file(split, tmp_path):
    np.savez(tmp_path / "calib.npz", input=split[0][:32])
    result = qc("compile", "mnist-cnn", "--quantize", "w4a8", "--calib", str(tmp_path / "calib.npz"),
                "--observer", "percentile", "-o", str(tmp_path / "q"))
    assert result.returncode == 0, result.stderr
    quantization = json.loads((tmp_path / "q" / "manifest.json").read_text())["quantization"]
    assert quantization["calibration_samples"] == 32
    assert {spec["weight_bits"] for spec in quantization["layers"].values()} == {4}


def test_cli_quantize_without_calibration_is_a_clear_error(tmp_path):
    result = qc("compile", "mnist-cnn", "--quantize", "w8a8", "-o", str(tmp_path / "q"))
    assert result.returncode == 2 and "calibration samples" in result.stderr
    assert not (tmp_path / "q").exists()


def test_cli_calibration_without_a_scheme_is_a_clear_error(split, tmp_path):
    np.savez(tmp_path / "calib.npz", input=split[0][:4])
    result = qc("compile", "mnist-cnn", "--calib", str(tmp_path / "calib.npz"), "-o", str(tmp_path / "q"))
    assert result.returncode == 2 and "without a quantization scheme" in result.stderr


@pytest.mark.parametrize("layer", ["conv2d_0", "conv2d_1", "matmul_0"])
def test_any_single_mnist_layer_can_stay_in_float(mnist_case, split, layer):
    x_train, _, x_test, y_test = split
    policy = QuantPolicy.from_scheme("w8a8").with_override(layer, quantize=False)
    model = compiler.compile(mnist_case.module, example_inputs=mnist_case.example_inputs,
                             input_names=mnist_case.input_names, quantize=policy,
                             calibration=({"input": d[None]} for d in x_train[:32]))
    quantization = model.manifest["quantization"]
    assert layer not in quantization["layers"] and len(quantization["layers"]) == 2
    # the float layer, what it reads and what only it feeds are islands, each with its reason
    reasons = set(quantization["float_island_reasons"])
    # in float before the first quantize or after the last dequantize: the prologue / epilogue, not an island
    outside = layer in ("conv2d_0", "matmul_0")
    assert ("policy: layer kept in float (quantize=False)" in reasons) != outside
    assert all(r.startswith(("policy:", "feeds float ops only:")) for r in reasons), reasons
    assert _accuracy(model, x_test[:200], y_test[:200]) >= 0.95


def test_strict_integer_only_refuses_a_policy_island(mnist_case, split):
    policy = QuantPolicy.from_scheme("w8a8").with_override("conv2d_1", quantize=False)
    with pytest.raises(StrictIntegerError, match=r"strict integer-only: \d+ float island op.*policy: layer kept in float"):
        compiler.compile(mnist_case.module, example_inputs=mnist_case.example_inputs,
                         input_names=mnist_case.input_names, quantize=policy, integer_only="strict",
                         calibration=({"input": d[None]} for d in split[0][:8]))


def test_cli_strict_integer_only_passes_when_there_is_no_island(split, tmp_path):
    np.savez(tmp_path / "calib.npz", input=split[0][:8])
    result = qc("compile", "mnist-cnn", "--quantize", "w8a8", "--calib", str(tmp_path / "calib.npz"),
                "--integer-only", "strict", "-o", str(tmp_path / "q"))
    assert result.returncode == 0, result.stderr
