"""Accuracy of integer-only quantization on the MNIST CNN, every scheme x observer, against float.

    .venv/bin/python benchmarks/mnist_quantization.py [--calib 64]

Calibrates on the first N training digits, evaluates on the 1,000 held-out digits; prints accuracy and
agreement of the top-1 class with the float model, and onnxruntime's ``quantize_static`` W8A8 (QDQ,
per-channel, uint8 x int8) on the same digits with each of its calibration methods.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch

import compiler
import models
from models import mnist_cnn
from passes.observers import OBSERVERS
from passes.quant_policy import SCHEMES, QuantPolicy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calib", type=int, default=64, help="calibration samples")
    args = parser.parse_args()
    case = models.get("mnist-cnn")
    x_train, _, x_test, y_test = mnist_cnn.load_split()
    with torch.no_grad():
        reference = case.module(torch.from_numpy(x_test)).numpy().argmax(1)
    print(f"float: accuracy {(reference == y_test).mean():.3f} on {len(y_test)} held-out digits")
    print(f"{'scheme':7s} {'observer':11s} {'accuracy':>8s} {'agree':>6s}")
    for scheme in SCHEMES:
        for observer in OBSERVERS:
            model = compiler.compile(case.module, example_inputs=case.example_inputs, input_names=case.input_names,
                                     quantize=QuantPolicy.from_scheme(scheme, observer),
                                     calibration=({"input": d[None]} for d in x_train[: args.calib]))
            predictions = np.array([model.run(d[None])["output_0"].argmax() for d in x_test])
            print(f"{scheme:7s} {observer:11s} {(predictions == y_test).mean():8.3f} "
                  f"{(predictions == reference).mean():6.3f}", flush=True)
    import onnxruntime as ort

    from compiler.bench import ort_quantize_static

    with tempfile.TemporaryDirectory() as tmp:
        float_path = models.export_onnx(case, Path(tmp) / "float.onnx")
        for method in ("minmax", "entropy", "percentile"):
            path = ort_quantize_static(float_path, [{"input": d[None]} for d in x_train[: args.calib]],
                                       Path(tmp) / f"{method}.onnx", method=method)
            session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            predictions = np.array([session.run(None, {"input": d[None]})[0].argmax() for d in x_test])
            print(f"onnxruntime w8a8 {method:11s} {(predictions == y_test).mean():8.3f} "
                  f"{(predictions == reference).mean():6.3f}", flush=True)


if __name__ == "__main__":
    main()
