"""Third-party ONNX files: shape computations folded before TVM's importer, results equal to onnxruntime's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import compiler
from frontends import FrontendError
from models.third_party import CONTENT_BYTES, CONTENT_TYPE, content_features
from passes.quant_policy import QuantPolicy

from .conftest import max_rel_err


@pytest.fixture(scope="module")
def magika_model() -> Path:
    """The content-type classifier that the ``magika`` package ships (a real third-party ONNX file)."""
    return _third_party(CONTENT_TYPE)


def test_a_reshape_computed_from_shapes_is_folded_before_tvm_imports_it(magika_model):
    from tvm.relax.frontend.onnx import from_onnx

    with pytest.raises(Exception, match="Reshape requires the input new shape to be Shape"):
        from_onnx(onnx.load(str(magika_model)), shape_dict={"bytes": [1, CONTENT_BYTES]})  # TVM's importer alone
    compiled = compiler.compile(magika_model, shapes={"bytes": (1, CONTENT_BYTES)})
    session = ort.InferenceSession(str(magika_model), providers=["CPUExecutionProvider"])
    files = [Path(compiler.__file__).read_bytes(), Path(np.__file__).read_bytes(), bytes(range(256)) * 3, b"%PDF-1.4"]
    for content in files:
        x = content_features(content)
        expected = session.run(None, {"bytes": x})[0]
        (actual,) = compiled.run({"bytes": x}).values()
        assert max_rel_err(actual, expected) <= 1e-4
        assert actual.argmax() == expected.argmax()


def test_the_folded_model_still_needs_a_shape_for_its_symbolic_batch(magika_model):
    with pytest.raises(FrontendError, match="need a concrete shape: 'bytes'"):
        compiler.import_model(magika_model)


def _third_party(spec) -> Path:
    from models.third_party import MissingPackageError, package_file

    try:
        return package_file(*spec)
    except MissingPackageError as exc:  # scripts/setup.sh installs the packages; a bare environment may not
        pytest.skip(str(exc))


def test_paddleocr_recogniser_reads_like_onnxruntime_and_w8a8_keeps_the_text():
    """PP-OCRv4's recogniser (rapidocr_onnxruntime's file): a Reshape computed from Shape, attention, hard
    sigmoids. Float: within 1e-4 of onnxruntime on the seven lines of scikit-image's scanned page, the same
    text. W8A8 (percentile), calibrated on page lines 1-3 and 12 rendered sentences: on the 14 held-out
    rendered sentences it reads exactly what float reads (float reads all 14 right); on page lines 4-7 its
    character error rate against what the page says is no worse than float's (0.059 vs 0.135 measured,
    benchmarks/third_party_onnx.py)."""
    from models import data, third_party as tp

    path = _third_party(tp.OCR_RECOGNIZER)
    characters, lines = tp.ocr_characters(path), tp.ocr_lines()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    expected = [session.run(None, {"x": x})[0] for x in lines]
    compiled = compiler.compile(path, shapes={"x": lines[0].shape})
    actual = [compiled.run({"x": x})[compiled.outputs[0].name] for x in lines]
    assert max(max_rel_err(a, e) for a, e in zip(actual, expected)) <= 1e-4
    assert [tp.ctc_decode(a, characters) for a in actual] == [tp.ctc_decode(e, characters) for e in expected]
    assert tp.ctc_decode(expected[0], characters) == tp.PAGE_TEXT[0]
    sentences = data.sentences()
    rendered = tp.rendered_lines(sentences)
    calibration = lines[:3] + rendered[:tp.RENDERED_CALIBRATION]
    quantized = compiler.compile(path, shapes={"x": lines[0].shape}, calibration=[{"x": x} for x in calibration],
                                 quantize=QuantPolicy.from_scheme("w8a8", "percentile"))

    def read(model, inputs):
        return [tp.ctc_decode(model.run({"x": x})[model.outputs[0].name], characters) for x in inputs]

    held_out = rendered[tp.RENDERED_CALIBRATION:]
    assert read(compiled, held_out) == sentences[tp.RENDERED_CALIBRATION:]
    assert read(quantized, held_out) == sentences[tp.RENDERED_CALIBRATION:]

    def error(texts):
        return np.mean([tp.character_error_rate(text, truth) for text, truth in zip(texts, tp.PAGE_TEXT[3:])])

    assert error(read(quantized, lines[3:])) <= error(read(compiled, lines[3:]))


def test_yolov8_detector_finds_the_same_boxes_as_onnxruntime():
    """nudenet's YOLOv8n (Split, Resize, a Reshape from Shape, DFL softmax): float within 1e-4 of
    onnxruntime on the 10 evaluation photos, the same detections (the astronaut's and the cameraman's faces)."""
    from models import data, third_party as tp

    path = _third_party(tp.DETECTOR)
    images = [tp.letterbox(p) for p in data.evaluation_photos().values()]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    compiled = compiler.compile(path, shapes={"images": images[0].shape})
    found = 0
    for x in images:
        expected = session.run(None, {"images": x})[0]
        actual = compiled.run({"images": x})[compiled.outputs[0].name]
        assert max_rel_err(actual, expected) <= 1e-4
        ours, theirs = tp.detections(actual), tp.detections(expected)
        assert [d[0] for d in ours] == [d[0] for d in theirs]
        assert all(tp.box_iou(a[2], b[2]) > 0.999 for a, b in zip(ours, theirs))
        found += len(theirs)
    assert found >= 2
