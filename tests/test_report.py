"""Per-layer SQNR report on the real MNIST CNN, through the API and the CLI."""

from __future__ import annotations

import json
import math

import numpy as np

from models import mnist_cnn
from compiler.quantization.report import layer_report

from .conftest import qc


def test_report_is_sorted_worst_first_and_4_bit_is_worse(mnist_imported):
    imported = mnist_imported
    samples = [{"input": d[None]} for d in mnist_cnn.load_split()[0][:16]]
    w8 = layer_report(imported, samples, "w8a8")
    w4 = layer_report(imported, samples, "w4a4")
    assert sorted(r.layer for r in w8) == ["conv2d_0", "conv2d_1", "matmul_0"]
    assert [r.sqnr_db for r in w8] == sorted(r.sqnr_db for r in w8)
    assert all(math.isfinite(r.sqnr_db) and r.sqnr_db > 20 for r in w8)  # 8 bits: tens of dB
    by_layer = {r.layer: r.sqnr_db for r in w4}
    assert all(by_layer[r.layer] < r.sqnr_db for r in w8)
    assert {r.weight_bits for r in w4} == {4}


def test_report_on_the_command_line(tmp_path):
    np.savez(tmp_path / "calib.npz", input=mnist_cnn.load_split()[0][:8])
    result = qc("report", "mnist-cnn", "--quantize", "w8a8", "--calib", str(tmp_path / "calib.npz"), "--json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert {"layer", "weight_bits", "activation_bits", "input_range", "sqnr_db"} <= set(rows[0])
    missing = qc("report", "mnist-cnn", "--quantize", "w8a8")
    assert missing.returncode == 2 and "--calib" in missing.stderr


def test_formats_report_on_the_command_line(tmp_path):
    np.savez(tmp_path / "calib.npz", input=mnist_cnn.load_split()[2][:4])
    result = qc("report", "mnist-cnn", "--formats", "int8,mxfp4", "--calib", str(tmp_path / "calib.npz"),
                "--plot", str(tmp_path / "formats.png"))
    assert result.returncode == 0, result.stderr
    assert "conv2d_0" in result.stdout and "mxfp4" in result.stdout and "whole model" in result.stdout
    assert (tmp_path / "formats.png").read_bytes()[:4] == b"\x89PNG"
    bad = qc("report", "mnist-cnn", "--formats", "int8,fp7", "--calib", str(tmp_path / "calib.npz"))
    assert bad.returncode == 2 and "unknown number format 'fp7'" in bad.stderr
