"""``qc profile`` / ``compiler.profile``: per-kernel rows that add up, keyed to the manifest's kernel info."""

from __future__ import annotations

import json

import numpy as np
import pytest

import compiler
from compiler.errors import CompilerError
from compiler.quantization.bit_allocation import layer_costs
from models import mnist_cnn

from .conftest import qc


def test_profile_of_a_quantized_model_times_its_int8_kernels_against_the_int8_peak(mnist_case):
    digits = [{"input": d[None]} for d in mnist_cnn.load_split()[0][:8]]
    model = compiler.compile(mnist_case.module, example_inputs=mnist_case.example_inputs,
                             input_names=mnist_case.input_names, quantize="w8a8", calibration=digits)
    info = model.manifest["kernel_info"]
    convs = sorted((name for name in info if "u8i8" in name and "conv2d" in name), key=lambda n: info[n]["layer"])
    # each int8 kernel names its layer (carried through fusion), whatever order the VM calls them in
    assert [info[n]["layer"] for n in convs] == ["conv2d_0", "conv2d_1"]
    assert info[convs[0]]["args"][0].startswith("uint8[1x1x") and info[convs[1]]["args"][0].startswith("uint8[1x16x")
    assert all(info[n]["integer"] and info[n]["ops"] > 0 for n in convs)
    (dense,) = [n for n in info if "u8i8" in n and "matmul" in n]
    assert info[dense]["layer"] == "matmul_0"
    imported = compiler.import_model(mnist_case.module, example_inputs=mnist_case.example_inputs,
                                     input_names=mnist_case.input_names)
    macs = {cost.name: cost.macs for cost in layer_costs(imported)}
    assert all(info[n]["ops"] == 2 * macs[info[n]["layer"]] for n in convs + [dense])  # not the padding lanes
    report = compiler.profile(model, digits[0], repeat=5, warmup=1)
    rows = {row.name: row for row in report.rows}
    assert set(convs) <= set(rows) and all(rows[n].kind == "int8" and rows[n].calls == 1 for n in convs)
    assert [rows[n].layer for n in convs] == ["conv2d_0", "conv2d_1"]
    assert all(rows[n].gops > 0 and 0 < rows[n].peak_fraction for n in convs)
    assert abs(sum(r.share for r in report.rows) - 1) < 1e-6 and report.total_ms > 0
    # the hook's own cost, measured around empty kernels, is off the rows: none goes below zero
    assert report.hook_ms > 0 and all(r.ms >= 0 for r in report.rows)
    assert [r.ms for r in report.rows] == sorted((r.ms for r in report.rows), reverse=True)
    assert any(r.kind == "runtime" and r.gops is None for r in report.rows)  # vm.builtin.* calls
    assert "kernels sum" in report.text() and convs[0] in report.text()


def test_qc_profile_prints_json_for_an_artifact_and_refuses_bad_arguments(mnist_artifact, tmp_path):
    result = qc("profile", str(mnist_artifact), "--repeat", "3", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    float_rows = [r for r in report["rows"] if r["kind"] == "fp32"]
    assert float_rows and all(r["gops"] is None or r["gops"] > 0 for r in float_rows)
    assert report["fp32_peak_gflops"] > 0
    np.savez(tmp_path / "wrong.npz", nope=np.zeros(3, np.float32))
    result = qc("profile", str(mnist_artifact), "--input", str(tmp_path / "wrong.npz"))
    assert result.returncode == 2 and result.stderr.startswith("qc: error:")
    with pytest.raises(CompilerError, match="repeat must be >= 1"):
        compiler.profile(mnist_artifact, repeat=0)


def test_layers_of_the_same_shape_keep_kernels_of_their_own():
    import torch

    from compiler.quantization.layer_latency import layer_kernel_times

    torch.manual_seed(0)
    conv = lambda: (torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.ReLU())  # noqa: E731
    twins = torch.nn.Sequential(*conv(), *conv(), *conv()).eval()  # the 2nd and 3rd: same shapes and padding
    x = np.random.default_rng(0).standard_normal((1, 8, 10, 10)).astype(np.float32)
    model = compiler.compile(twins, example_inputs=(torch.from_numpy(x),), quantize="w8a8",
                             calibration=[{"input": x}])
    layers = sorted(v["layer"] for v in model.manifest["kernel_info"].values() if v.get("layer"))
    assert layers == ["conv2d_0", "conv2d_1", "conv2d_2"]  # identical computations, not merged into one kernel
    assert set(layer_kernel_times(model, model.prepare({"input": x}), 1, 3)) == set(layers)
