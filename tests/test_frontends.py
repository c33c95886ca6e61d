"""Third-party ONNX files: shape computations folded before TVM's importer, results equal to onnxruntime's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import compiler
from frontends import FrontendError

from .conftest import max_rel_err

BYTES = 2048  # magika's model reads the first and last 1024 bytes of a file, each 0..255, 256 for padding


@pytest.fixture(scope="module")
def magika_model() -> Path:
    """The content-type classifier that the ``magika`` package ships (a real third-party ONNX file)."""
    magika = pytest.importorskip("magika")
    (path,) = Path(magika.__file__).parent.glob("models/*/model.onnx")
    return path


def features(content: bytes) -> np.ndarray:
    """magika's input layout for ``content``: its first and last 1024 bytes, padded with 256."""
    head, tail = list(content[:1024]), list(content[-1024:])
    head += [256] * (1024 - len(head))
    tail = [256] * (1024 - len(tail)) + tail
    return np.array([head + tail], dtype=np.int32)


def test_a_reshape_computed_from_shapes_is_folded_before_tvm_imports_it(magika_model):
    from tvm.relax.frontend.onnx import from_onnx

    with pytest.raises(Exception, match="Reshape requires the input new shape to be Shape"):
        from_onnx(onnx.load(str(magika_model)), shape_dict={"bytes": [1, BYTES]})  # TVM's importer alone
    compiled = compiler.compile(magika_model, shapes={"bytes": (1, BYTES)})
    session = ort.InferenceSession(str(magika_model), providers=["CPUExecutionProvider"])
    files = [Path(compiler.__file__).read_bytes(), Path(np.__file__).read_bytes(), bytes(range(256)) * 3, b"%PDF-1.4"]
    for content in files:
        x = features(content)
        expected = session.run(None, {"bytes": x})[0]
        (actual,) = compiled.run({"bytes": x}).values()
        assert max_rel_err(actual, expected) <= 1e-4
        assert actual.argmax() == expected.argmax()


def test_the_folded_model_still_needs_a_shape_for_its_symbolic_batch(magika_model):
    with pytest.raises(FrontendError, match="need a concrete shape: 'bytes'"):
        compiler.import_model(magika_model)
