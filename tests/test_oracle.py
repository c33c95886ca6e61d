"""The per-op oracle: the lowered integer executable against the QDQ float simulation, within derived bounds."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import compiler
from compiler.quantization.oracle import OracleError, check, verify
from models import calibration, get, mnist_cnn
from passes import lower_integer

from .conftest import qc


@pytest.fixture(scope="module")
def digits():
    return [{"input": d[None]} for d in mnist_cnn.load_split()[0][:32]]


@pytest.fixture
def mutation():
    """Switch on a deliberate lowering bug (``passes.lower_integer.MUTATIONS``) for one test only."""
    added = []

    def switch_on(name: str) -> None:
        lower_integer.MUTATIONS.add(name)
        added.append(name)

    yield switch_on
    for name in added:
        lower_integer.MUTATIONS.discard(name)


def _assert_passes(report):
    assert report.ok, report.summary()
    assert report.rows and all(r.elements > 0 and r.max_diff <= r.bound for r in report.rows)
    assert report.debug_outputs_equal and report.kernels_identical >= 1


@pytest.mark.parametrize("scheme", ["w8a8", "w4a8"])
def test_mnist_integer_executable_stays_within_the_bound_of_the_qdq_simulation(mnist_imported, digits, scheme):
    report = verify(mnist_imported, digits, scheme)
    _assert_passes(report)
    assert {r.anchor for r in report.rows} == {"in:x", "conv2d_0", "conv2d_1"}
    assert report.sqnr_db >= 40 and report.cosine >= 0.9999
    assert "PASS" in report.summary() and "production kernels identical in the debug build" in report.summary()


def test_a_zero_point_off_by_one_fails_naming_the_layer(mnist_imported, digits, mutation):
    mutation("zero_point")
    report = verify(mnist_imported, digits, "w8a8")
    assert not report.ok and report.first_failure is not None
    assert report.first_failure.layer.startswith("conv2d_")
    with pytest.raises(OracleError, match=r"conv2d_\d .*integer executable -?\d+, QDQ simulation -?\d+"):
        check(report)


class ReluPlusOne(torch.nn.Module):
    """c2(relu(c1(x)) + 1.0), optionally with a softmax over channels before c2."""

    def __init__(self, softmax: bool = False):
        super().__init__()
        torch.manual_seed(0)
        self.softmax = softmax
        self.c1 = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.c2 = torch.nn.Conv2d(8, 4, 3, padding=1)

    def forward(self, x):
        y = torch.relu(self.c1(x)) + 1.0
        return self.c2(torch.softmax(y, dim=1) if self.softmax else y)


def _relu_plus_one(softmax: bool):
    rng = np.random.default_rng(0)
    samples = [{"input": rng.standard_normal((1, 3, 8, 8)).astype(np.float32)} for _ in range(8)]
    imported = compiler.import_model(ReluPlusOne(softmax).eval(), example_inputs=(torch.randn(1, 3, 8, 8),),
                                     input_names=["input"])
    return imported, samples


@pytest.mark.parametrize("softmax", [False, True])
def test_relu_then_constant_add_passes(softmax):
    _assert_passes(verify(*_relu_plus_one(softmax)))


def test_folding_a_constant_add_into_a_clamped_accumulator_fails_naming_the_op(mutation):
    # clamp(y) + c lowered as clamp(y + c). The add must reach the lowering as an add on the accumulator:
    # when its result feeds a quantized layer directly the plan makes it a 256-entry table instead, so a
    # float op (softmax) reads it here, and the oracle sees the bug at the softmax's quantized output.
    mutation("constant_add_fold")
    report = verify(*_relu_plus_one(softmax=True))
    assert not report.ok and report.first_failure.anchor == "in:softmax_0"
    assert report.first_failure.layer == "conv2d_1"
    with pytest.raises(OracleError, match=r"in:softmax_0 \(layer conv2d_1\)"):
        check(report)


def test_qc_verify_prints_the_per_op_table_and_the_verdict(tmp_path):
    calib = tmp_path / "mnist.npz"
    np.savez(calib, input=mnist_cnn.load_split()[0][:8])
    result = qc("verify", "mnist-cnn", "--quantize", "w8a8", "--calib", str(calib), "--samples", "2")
    assert result.returncode == 0, result.stderr
    assert "conv2d_0" in result.stdout and "verdict: PASS" in result.stdout
    result = qc("verify", "mnist-cnn", "--quantize", "w4a8", "--calib", str(calib), "--samples", "1", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] and {r["anchor"] for r in report["rows"]} == {"in:x", "conv2d_0", "conv2d_1"}
    assert qc("verify", "mnist-cnn", "--quantize", "w8a8").returncode == 2  # no --calib: a user error


def test_compile_with_the_oracle_records_it_in_the_manifest(mnist_case, digits):
    model = compiler.compile(mnist_case.module, example_inputs=mnist_case.example_inputs,
                             input_names=mnist_case.input_names, quantize="w8a8", calibration=iter(digits),
                             oracle=True)
    oracle = model.manifest["quantization"]["oracle"]
    assert oracle["ok"] and oracle["samples"] == 4 and oracle["ops_within_bound"] == oracle["ops"] == 3


def test_compile_with_the_oracle_raises_when_the_lowering_is_wrong(mnist_case, digits, mutation):
    mutation("zero_point")
    with pytest.raises(OracleError, match="conv2d_"):
        compiler.compile(mnist_case.module, example_inputs=mnist_case.example_inputs,
                         input_names=mnist_case.input_names, quantize="w8a8", calibration=digits, oracle=True)


BIG_SCHEMES = ["w8a8", pytest.param("w4a8", marks=pytest.mark.extended)]
"""W8A8 in every run; W4A8 on the large models only in the extended run (``pytest -m extended``): the CI
budget. ``benchmarks/oracle_models.py`` measures both on every registry model."""


@pytest.mark.slow
@pytest.mark.parametrize("name", ["efficientnet-lite0", "resnet18", "minilm"])
@pytest.mark.parametrize("scheme", BIG_SCHEMES)
def test_registry_model_integer_executable_stays_within_the_bound(name, scheme):
    case = get(name)
    imported = compiler.import_model(case.module, example_inputs=case.example_inputs, input_names=case.input_names)
    _assert_passes(verify(imported, calibration.samples(name), scheme, max_samples=1))
