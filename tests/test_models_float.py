"""Float compiles of the four real models match their references (max relative error <= 1e-4)."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

import compiler
import models
from models import data, efficientnet_lite0, minilm, mnist_cnn

from .conftest import max_rel_err

TOLERANCE = 1e-4


@pytest.mark.parametrize("photo", ["chelsea", "coffee"])
def test_efficientnet_lite0_matches_pytorch_on_real_photos(effnet, effnet_case, photo):
    x = efficientnet_lite0.preprocess(data.photos()[photo])
    with torch.no_grad():
        expected = effnet_case.module(torch.from_numpy(x)).numpy()
    actual = effnet.run(x)["output_0"]
    assert max_rel_err(actual, expected) <= TOLERANCE
    assert int(actual.argmax()) == int(expected.argmax())
    assert int(actual.argmax()) in efficientnet_lite0.EXPECTED_TOP1[photo]


def test_mnist_cnn_onnx_matches_onnxruntime_on_held_out_digits(mnist_onnx):
    compiled = compiler.compile(mnist_onnx)
    session = ort.InferenceSession(str(mnist_onnx), providers=["CPUExecutionProvider"])
    _, _, x_test, y_test = mnist_cnn.load_split()
    agree = 0
    for digit in x_test[:50]:
        digit = digit[None]
        expected = session.run(None, {"input": digit})[0]
        actual = compiled.run({"input": digit})["output_0"]
        assert max_rel_err(actual, expected) <= TOLERANCE
        agree += int(actual.argmax() == expected.argmax())
    assert agree == 50


def test_mnist_cnn_torch_path_keeps_its_accuracy(mnist_case):
    compiled = compiler.compile(mnist_case.module, example_inputs=mnist_case.example_inputs)
    _, _, x_test, y_test = mnist_cnn.load_split()
    predictions = np.array([compiled.run(d[None])["output_0"].argmax() for d in x_test[:200]])
    with torch.no_grad():
        reference = mnist_case.module(torch.from_numpy(x_test[:200])).numpy().argmax(1)
    assert (predictions == reference).all()
    assert (predictions == y_test[:200]).mean() > 0.9


def test_minilm_onnx_matches_onnxruntime_on_real_sentences(tmp_path):
    case = models.get("minilm")
    path = models.export_onnx(case, tmp_path / "minilm.onnx")
    compiled = compiler.compile(path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    sentences = data.sentences()[:3]
    embeddings = []
    for sentence in sentences:
        feed = minilm.tokenize([sentence])
        expected = session.run(None, feed)[0]
        actual = compiled.run(feed)["output_0"]
        assert max_rel_err(actual, expected) <= TOLERANCE
        embeddings.append(actual[0])
    a, b = embeddings[0], embeddings[1]
    cosine = float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))
    assert sentences[:2] == ["A man is eating food.", "A man is eating a piece of bread."]
    assert cosine == pytest.approx(0.7553, abs=1e-3)


def test_resnet18_matches_pytorch():
    case = models.get("resnet18")
    compiled = compiler.compile(case.module, example_inputs=case.example_inputs)
    with torch.no_grad():
        expected = case.module(*case.example_inputs).numpy()
    assert max_rel_err(compiled.run(case.example_inputs[0])["output_0"], expected) <= TOLERANCE
