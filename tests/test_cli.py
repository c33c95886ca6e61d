"""The command line: compile, info, run and bench on real models, as a user types them."""

from __future__ import annotations

import json

import numpy as np

import compiler

from .conftest import qc


def test_compile_a_registered_torch_model_and_describe_it(tmp_path):
    out = tmp_path / "mnist"
    result = qc("compile", "mnist-cnn", "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert f"wrote {out}/" in result.stdout
    info = qc("info", str(out))
    assert info.returncode == 0, info.stderr
    assert "checksum ok" in info.stdout and "input      input: float32[1, 1, 28, 28]" in info.stdout
    manifest = json.loads(qc("info", str(out), "--json").stdout)
    assert manifest["source"] == {"kind": "torch", "model": "mnist-cnn"}


def test_compile_a_module_function_spec(tmp_path):
    result = qc("compile", "models.mnist_cnn:load", "-o", str(tmp_path / "m"))
    assert result.returncode == 0, result.stderr


def test_run_prints_a_summary_without_output_file(mnist_artifact, tmp_path):
    np.savez(tmp_path / "in.npz", input=np.zeros((1, 1, 28, 28), np.float32))
    result = qc("run", str(mnist_artifact), "--input", str(tmp_path / "in.npz"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("output_0: shape [1, 10] float32")


def test_bench_json_reports_every_engine_with_medians(mnist_artifact):
    result = qc("bench", "mnist-cnn", "--repeat", "5", "--warmup", "1", "--json", "--quiet")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [r["engine"] for r in rows] == ["qc (TVM)", "onnxruntime", "pytorch eager"]
    for row in rows:
        assert {"model", "engine", "precision", "median_ms", "p90_ms"} <= set(row)
        assert 0 < row["median_ms"] <= row["p90_ms"]


def test_bench_an_artifact_finds_its_onnx_source(mnist_artifact):
    result = qc("bench", str(mnist_artifact), "--repeat", "3", "--warmup", "1", "--json")
    assert result.returncode == 0, result.stderr
    assert [r["engine"] for r in json.loads(result.stdout)] == ["qc (TVM)", "onnxruntime"]


def test_bench_runs_qc_on_the_same_threads_as_its_peers_and_restores_the_pool(mnist_artifact):
    import tvm

    pool = tvm.get_global_func("runtime.NumThreads")
    before, during = pool(), []
    compiler.benchmark(compiler.load(mnist_artifact), None, repeat=2, warmup=1, threads=1, peers=False,
                       on_engine=lambda engine: during.append(pool()))
    assert during == [1] and pool() == before
