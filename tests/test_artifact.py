"""Artifacts: compile -> disk -> load in a fresh process gives the same outputs; tampering is caught."""

from __future__ import annotations

import json

import numpy as np
import pytest

import compiler
from models import data, efficientnet_lite0

from .conftest import PLAIN_TARGET, qc


def test_round_trip_in_a_fresh_process_gives_identical_outputs(effnet, tmp_path):
    x = efficientnet_lite0.preprocess(data.photos()["coffee"])
    expected = effnet.run(x)["output_0"]
    effnet.save(tmp_path / "effnet")
    np.savez(tmp_path / "in.npz", **{effnet.inputs[0].name: x})
    result = qc("run", str(tmp_path / "effnet"), "--input", str(tmp_path / "in.npz"),
                "--output", str(tmp_path / "out.npz"))
    assert result.returncode == 0, result.stderr
    with np.load(tmp_path / "out.npz") as out:
        np.testing.assert_array_equal(out["output_0"], expected)


def test_manifest_describes_inputs_outputs_target_versions_and_checksum(mnist_artifact):
    manifest = json.loads((mnist_artifact / "manifest.json").read_text())
    assert manifest["inputs"] == [{"name": "input", "shape": [1, 1, 28, 28], "dtype": "float32"}]
    assert manifest["outputs"] == [{"name": "output_0", "shape": [1, 10], "dtype": "float32"}]
    assert manifest["target"]["kind"] == "llvm" and manifest["target"]["mcpu"]
    assert {"apache-tvm", "apache-tvm-ffi", "numpy"} <= set(manifest["versions"])
    assert len(manifest["library"]["sha256"]) == 64
    assert [step["pass"] for step in manifest["pipeline"]] == list(compiler.DEFAULT_PASSES)


def test_tampered_library_is_refused_on_load(mnist_artifact, tmp_path):
    import shutil

    copy = tmp_path / "tampered"
    shutil.copytree(mnist_artifact, copy)
    with open(copy / "model.so", "r+b") as f:
        f.seek(100)
        byte = f.read(1)
        f.seek(100)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(compiler.ArtifactError, match="checksum mismatch"):
        compiler.load(copy)


@pytest.mark.parametrize("edit", ["input shape", "missing key"])
def test_an_edited_manifest_is_refused_on_load(mnist_artifact, tmp_path, edit):
    import shutil

    copy = tmp_path / "edited"
    shutil.copytree(mnist_artifact, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    if edit == "input shape":  # the library would read 4x the memory it was compiled for
        manifest["inputs"][0]["shape"] = [1, 1, 56, 56]
        expected = "the manifest was edited after compilation"
    else:
        del manifest["outputs"]
        expected = "lacks outputs"
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(compiler.ArtifactError, match=expected):
        compiler.load(copy)
    result = qc("run", str(copy), "--input", str(tmp_path / "none.npz"))
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and expected in result.stderr


def test_an_artifact_for_a_cpu_with_more_instructions_is_refused_on_load(mnist_artifact, monkeypatch):
    import backends.targets

    monkeypatch.setattr(backends.targets, "host_target", lambda num_cores=None: PLAIN_TARGET)  # an SSE2-only machine
    with pytest.raises(compiler.ArtifactError, match=r"code for CPU .* uses .*avx2.*which this machine lacks"):
        compiler.load(mnist_artifact)


def test_saving_over_an_existing_artifact_replaces_it(mnist_artifact, tmp_path):
    model = compiler.load(mnist_artifact)
    model.save(tmp_path / "a")
    model.save(tmp_path / "a")
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["manifest.json", "model.so"]
    assert [p.name for p in tmp_path.iterdir()] == ["a"]  # no temporary directories left
