"""The pipeline is a named, printable list; users add passes by decorator, entry point or TOML spec."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tvm

import compiler
import passes
from compiler import Pipeline

from .conftest import qc


def test_default_pipeline_is_printable_with_contracts():
    text = Pipeline.default().describe()
    assert text.splitlines()[0].split()[1] == "canonicalize_bindings"
    assert "legalize_ops" in text and "Relax ops -> calls to TIR PrimFuncs" in text


def test_registered_pass_inserted_after_a_step_runs_in_order():
    seen = []

    @passes.register_pass("test_recorder")
    def recorder(mod: tvm.IRModule, label: str = "") -> tvm.IRModule:
        """Relax -> same Relax; remembers that it ran."""
        seen.append(label)
        return mod

    pipeline = Pipeline.default().insert("test_recorder", after="fold_constant", options={"label": "x"})
    assert pipeline.names.index("test_recorder") == pipeline.names.index("fold_constant") + 1
    x = np.ones((1, 3), np.float32)
    import torch

    module = torch.nn.Linear(3, 2)
    model = compiler.compile(module, example_inputs=(torch.from_numpy(x),), passes=pipeline, verify=True)
    assert seen == ["x"]
    np.testing.assert_allclose(model.run(x)["output_0"], module(torch.from_numpy(x)).detach().numpy(), rtol=1e-5)


def test_unknown_pass_lists_the_registered_ones():
    with pytest.raises(passes.PassError, match="unknown pass 'no_such_pass'.*legalize_ops"):
        Pipeline(["canonicalize_bindings", "no_such_pass"])


def test_insert_next_to_a_missing_step_is_an_error():
    with pytest.raises(compiler.PipelineSpecError, match="no step 'nowhere'"):
        Pipeline.default().insert("fold_constant", after="nowhere")


def test_plugin_pass_from_entry_point_is_listed(tmp_path):
    result = qc("passes", "--json")
    assert result.returncode == 0, result.stderr
    listed = {p["name"]: p for p in json.loads(result.stdout)["passes"]}
    assert listed["op_histogram"]["origin"] == "qc_plugin_example"
    assert "op_histogram" in listed["op_histogram"]["contract"]


def test_example_plugin_compiles_a_real_model_through_a_toml_spec(tmp_path, mnist_onnx, mnist_artifact):
    spec = tmp_path / "pipeline.toml"
    spec.write_text('[[insert]]\npass = "op_histogram"\nafter = "decompose_for_inference"\n')
    pipeline = Pipeline.from_spec(spec)
    imported = compiler.import_model(mnist_onnx)
    lowered, _ = pipeline.run(imported.mod)
    histogram = dict(lowered.attrs["qc_plugin_example.op_histogram"])
    assert histogram["relax.nn.conv2d"] == 2 and histogram["relax.matmul"] == 1
    result = qc("compile", str(mnist_onnx), "--passes", str(spec), "-o", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    x = np.random.default_rng(0).standard_normal((1, 1, 28, 28)).astype(np.float32)
    np.testing.assert_array_equal(compiler.load(tmp_path / "out").run(x)["output_0"],
                                  compiler.load(mnist_artifact).run(x)["output_0"])
