"""Bad input: a one-line error naming the cause, a non-zero exit, and no partial artifact."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import compiler
import frontends

from .conftest import qc


def _assert_clean_failure(result, out_dir, *fragments):
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("qc: error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0]
    assert not out_dir.exists()
    assert not any(p.name.startswith(f".{out_dir.name}") for p in out_dir.parent.iterdir())


def _tiny_onnx(op: str = "Relu", batch: int | str = 1) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 4])
    nodes = [helper.make_node("Relu", ["x"], ["h"], name="relu0"), helper.make_node(op, ["h"], ["y"], name=f"{op.lower()}0")]
    return helper.make_model(helper.make_graph(nodes, "tiny", [x], [y]), opset_imports=[helper.make_opsetid("", 18)])


def test_missing_file(tmp_path):
    result = qc("compile", str(tmp_path / "nope.onnx"), "-o", str(tmp_path / "out"))
    _assert_clean_failure(result, tmp_path / "out", "not found", "nope.onnx")


def test_not_an_onnx_file(tmp_path):
    bogus = tmp_path / "notes.onnx"
    bogus.write_text("this is not a model\n" * 20)
    result = qc("compile", str(bogus), "-o", str(tmp_path / "out"))
    _assert_clean_failure(result, tmp_path / "out", "notes.onnx", "not")


def test_truncated_onnx_file(tmp_path, mnist_onnx):
    truncated = tmp_path / "truncated.onnx"
    blob = mnist_onnx.read_bytes()
    truncated.write_bytes(blob[: len(blob) // 2])
    result = qc("compile", str(truncated), "-o", str(tmp_path / "out"))
    _assert_clean_failure(result, tmp_path / "out", "truncated")


def test_unsupported_operator_names_op_and_node(tmp_path):
    path = tmp_path / "celu.onnx"
    onnx.save(_tiny_onnx("Celu"), path)
    result = qc("compile", str(path), "-o", str(tmp_path / "out"))
    _assert_clean_failure(result, tmp_path / "out", "Celu", "celu0")


def test_symbolic_dimension_without_shape(tmp_path):
    path = tmp_path / "dynamic.onnx"
    onnx.save(_tiny_onnx(batch="batch"), path)
    result = qc("compile", str(path), "-o", str(tmp_path / "out"))
    _assert_clean_failure(result, tmp_path / "out", "'x'", "batch", "--shape")


def test_symbolic_dimension_with_shape_compiles(tmp_path):
    path = tmp_path / "dynamic.onnx"
    onnx.save(_tiny_onnx(batch="batch"), path)
    result = qc("compile", str(path), "--shape", "x=3x4", "-o", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    assert compiler.load(tmp_path / "out").inputs[0].shape == (3, 4)


def test_wrong_input_shape_and_dtype_at_run_time(mnist_artifact, tmp_path):
    model = compiler.load(mnist_artifact)
    with pytest.raises(compiler.InputError, match=r"expected shape \[1, 1, 28, 28\], got \[1, 28, 28\]"):
        model.run(np.zeros((1, 28, 28), np.float32))
    with pytest.raises(compiler.InputError, match="expected dtype float32, got float64"):
        model.run(np.zeros((1, 1, 28, 28)))
    np.savez(tmp_path / "bad.npz", input=np.zeros((2, 1, 28, 28), np.float32))
    result = qc("run", str(mnist_artifact), "--input", str(tmp_path / "bad.npz"))
    assert result.returncode == 2 and "expected shape [1, 1, 28, 28], got [2, 1, 28, 28]" in result.stderr


def test_tampered_artifact_on_the_command_line(mnist_artifact, tmp_path):
    import shutil

    copy = tmp_path / "tampered"
    shutil.copytree(mnist_artifact, copy)
    with open(copy / "model.so", "ab") as f:
        f.write(b"\0")
    result = qc("info", str(copy))
    assert result.returncode == 2 and "checksum mismatch" in result.stderr


def test_onnx_model_proto_with_constant_nodes_and_external_data(tmp_path, mnist_onnx):
    from onnx import external_data_helper

    proto = onnx.load(mnist_onnx)
    external_data_helper.convert_model_to_external_data(proto, all_tensors_to_one_file=True, location="w.bin",
                                                        size_threshold=0)
    onnx.save(proto, tmp_path / "ext.onnx")
    assert (tmp_path / "w.bin").is_file()
    by_path = frontends.from_onnx(tmp_path / "ext.onnx")
    assert by_path.inputs[0].shape == (1, 1, 28, 28)
    unresolved = onnx.load(tmp_path / "ext.onnx", load_external_data=False)
    with pytest.raises(frontends.InvalidModelError, match="external data"):
        frontends.from_onnx(unresolved)
    const_graph = helper.make_graph(
        [helper.make_node("Constant", [], ["c"], value=helper.make_tensor("c", TensorProto.FLOAT, [4], [1, 2, 3, 4])),
         helper.make_node("Add", ["x", "c"], ["y"])], "const",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    model = compiler.compile(helper.make_model(const_graph, opset_imports=[helper.make_opsetid("", 18)]))
    np.testing.assert_array_equal(model.run(np.zeros((1, 4), np.float32))["y"], [[1, 2, 3, 4]])


def test_torch_module_without_example_inputs_is_refused():
    import torch

    with pytest.raises(compiler.CompilerError, match="example_inputs"):
        compiler.compile(torch.nn.Linear(2, 2))


@pytest.mark.parametrize("kind, fragment", [
    ("text", "not a readable .npz"), ("npy", "is an .npy array, not an .npz"), ("object", "object (pickled)"),
    ("missing", "calibration file not found")])
def test_bad_calibration_files_are_one_line_errors(tmp_path, kind, fragment):
    onnx.save(_tiny_onnx(), tmp_path / "tiny.onnx")
    calib = tmp_path / f"calib.{'npy' if kind == 'npy' else 'npz'}"
    if kind == "text":
        calib.write_text("not numbers\n")
    elif kind == "npy":
        np.save(calib, np.zeros((2, 1, 4), np.float32))
    elif kind == "object":
        np.savez(calib, x=np.array([object(), 1], dtype=object))
    result = qc("compile", str(tmp_path / "tiny.onnx"), "--quantize", "w8a8", "--calib", str(calib),
                "-o", str(tmp_path / "out"))
    _assert_clean_failure(result, tmp_path / "out", fragment, calib.name)


def test_malformed_target_json_is_a_one_line_error(tmp_path):
    onnx.save(_tiny_onnx(), tmp_path / "tiny.onnx")
    result = qc("compile", str(tmp_path / "tiny.onnx"), "--target", '{"kind": llvm}', "-o", str(tmp_path / "out"))
    _assert_clean_failure(result, tmp_path / "out", "--target is not valid JSON")


def test_a_scalar_input_runs(tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])
    s = helper.make_tensor_value_info("s", TensorProto.FLOAT, [])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])
    graph = helper.make_graph([helper.make_node("Mul", ["x", "s"], ["y"])], "scaled", [x, s], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), tmp_path / "scaled.onnx")
    model = compiler.compile(tmp_path / "scaled.onnx")
    out = model.run({"x": np.arange(4, dtype=np.float32), "s": np.array(2.5, np.float32)})["y"]
    np.testing.assert_array_equal(out, np.arange(4, dtype=np.float32) * 2.5)
    model.save(tmp_path / "art")
    np.savez(tmp_path / "in.npz", x=np.ones(4, np.float32), s=np.array(3.0, np.float32))
    result = qc("run", str(tmp_path / "art"), "--input", str(tmp_path / "in.npz"), "-o", str(tmp_path / "out.npz"))
    assert result.returncode == 0, result.stderr
    np.testing.assert_array_equal(np.load(tmp_path / "out.npz")["y"], np.full(4, 3.0, np.float32))


def test_unknown_float_op_names_the_choices(tmp_path, mnist_onnx):
    result = qc("compile", str(mnist_onnx), "--quantize", "w8a8", "--float-ops", "softmax,gelu",
                "-o", str(tmp_path / "out"))
    _assert_clean_failure(result, tmp_path / "out", "gelu", "softmax, layer_norm")
