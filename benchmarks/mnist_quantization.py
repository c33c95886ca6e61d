"""Accuracy of integer-only quantization on the MNIST CNN, every scheme x observer, against float.

    .venv/bin/python benchmarks/mnist_quantization.py [--calib 64]

Calibrates on the first N training digits, evaluates on the 1,000 held-out digits; prints accuracy and
agreement of the top-1 class with the float model.
"""

from __future__ import annotations

import argparse

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
                  f"{(predictions == reference).mean():6.3f}")


if __name__ == "__main__":
    main()
