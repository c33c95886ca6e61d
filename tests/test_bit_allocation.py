"""Mixed-precision bit allocation: the ILP's constraints, its errors, and the MNIST CNN end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest

from compiler.bit_allocation import (
    AllocationError,
    LayerCost,
    allocate,
    hessian_sensitivity,
    layer_costs,
    measured_sensitivity,
)
from models import mnist_cnn

from .conftest import qc

COSTS = [LayerCost("a", 1000, 10_000), LayerCost("b", 2000, 5_000), LayerCost("c", 4000, 40_000)]
SENSITIVITY = {("a", 4): 5.0, ("a", 8): 0.1, ("b", 4): 1.0, ("b", 8): 0.1, ("c", 4): 2.0, ("c", 8): 0.2}


def test_ilp_meets_the_size_budget_at_least_sensitivity():
    # W8 everywhere is 7000 B, W4 3500 B; 4500 B forces b and c (or a and c) down to 4 bits
    choice = allocate(SENSITIVITY, COSTS, max_size_bytes=4500)
    assert choice.bits == {"a": 8, "b": 4, "c": 4} and choice.size_bytes == 4000
    assert choice.solve_seconds < 1.0


def test_ties_pins_and_bops():
    assert allocate(SENSITIVITY, COSTS, max_size_bytes=4500, ties=[("a", "c")]).bits == {"a": 4, "b": 8, "c": 4}
    assert allocate(SENSITIVITY, COSTS, max_size_bytes=6000, pinned={"c": 4}).bits["c"] == 4
    # BOPs = MACs x w x 8: c at 4 bits saves the most
    assert allocate(SENSITIVITY, COSTS, max_bops=(10_000 * 8 + 5_000 * 8 + 40_000 * 4) * 8).bits["c"] == 4


def test_an_infeasible_budget_names_the_smallest_feasible_one():
    with pytest.raises(AllocationError, match="smallest feasible size is 3500 bytes"):
        allocate(SENSITIVITY, COSTS, max_size_bytes=1000)
    with pytest.raises(AllocationError, match="smallest feasible size is 4000 bytes"):
        allocate(SENSITIVITY, COSTS, max_size_bytes=1000, pinned={"a": 8})
    with pytest.raises(AllocationError, match=r"unknown layer\(s\) \['z'\]"):
        allocate(SENSITIVITY, COSTS, max_size_bytes=5000, ties=[("a", "z")])


def test_mnist_costs_and_measured_sensitivity(mnist_imported):
    costs = {c.name: c for c in layer_costs(mnist_imported)}
    assert costs["conv2d_0"].params == 16 * 1 * 3 * 3 and costs["conv2d_0"].macs == 16 * 28 * 28 * 9
    assert costs["matmul_0"].params == 1568 * 10 and costs["matmul_0"].macs == 1568 * 10
    digits = mnist_cnn.load_split()[0][:4]
    sensitivity = measured_sensitivity(mnist_imported, [{"input": d[None]} for d in digits])
    for name in costs:  # rounding to 4 bits disturbs the output far more than rounding to 8
        assert sensitivity[(name, 4)] > 10 * sensitivity[(name, 8)] > 0


def test_mnist_hessian_sensitivity_agrees_on_the_layers(mnist_case):
    import torch

    digits = torch.from_numpy(mnist_cnn.load_split()[0][:32])
    hessian = hessian_sensitivity(mnist_case.module, digits, probes=4)
    assert set(hessian) == {(n, b) for n in ("conv2d_0", "conv2d_1", "matmul_0") for b in (4, 8)}
    for name in ("conv2d_0", "conv2d_1", "matmul_0"):
        assert hessian[(name, 4)] > 10 * hessian[(name, 8)] > 0


def test_cli_bits_auto_fits_the_budget_and_records_the_choice(tmp_path):
    np.savez(tmp_path / "calib.npz", input=mnist_cnn.load_split()[0][:16])
    result = qc("compile", "mnist-cnn", "--bits", "auto", "--max-size", "15.3KB", "--calib",
                str(tmp_path / "calib.npz"), "-o", str(tmp_path / "mixed"))
    assert result.returncode == 0, result.stderr
    quantization = json.loads((tmp_path / "mixed" / "manifest.json").read_text())["quantization"]
    allocation = quantization["bit_allocation"]
    assert allocation["size_bytes"] <= 15_300 and set(allocation["weight_bits"].values()) == {4, 8}
    assert {n: s["weight_bits"] for n, s in quantization["layers"].items()} == allocation["weight_bits"]
    result = qc("compile", "mnist-cnn", "--bits", "auto", "--max-size", "5KB", "--calib",
                str(tmp_path / "calib.npz"), "-o", str(tmp_path / "none"))
    assert result.returncode == 2 and "smallest feasible size is 10216 bytes" in result.stderr
