"""Mixed precision by ILP: quality and weight size of uniform W8A8, uniform W4A8, the ILP choice at a size
budget halfway between them, and random allocations of the ILP's size.

    .venv/bin/python benchmarks/mixed_precision.py [--model mnist-cnn|efficientnet-lite0] [--random 20]

The random baselines are drawn uniformly among all 4/8-bit allocations whose weight size is within 1% of
the ILP's (``random_allocations``; every one of them where fewer than ``--random`` exist), so they spend
the same bytes. MNIST CNN: calibrated (and sensitivity measured) on the first 64 training digits, accuracy
on the 1,000 held-out ones. EfficientNet-Lite0: calibrated on the 5 bundled photos and their mirror images
(sensitivity on 2 of them), top-1 agreement and mean KL(float || quantized) of the softmax on the 200
held-out views of 10 other photos (``models.data.evaluation_views``).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

import compiler
import models
from compiler.quantization.bit_allocation import (allocate, hessian_sensitivity, layer_costs, measured_sensitivity,
                                                  policy_for, random_allocations)
from models import data, efficientnet_lite0, mnist_cnn


def _mnist():
    x_train, _, x_test, y_test = mnist_cnn.load_split()
    calibration = [{"input": d[None]} for d in x_train[:64]]

    def evaluate(model) -> str:
        predictions = np.array([model.run(d[None])["output_0"].argmax() for d in x_test])
        return f"accuracy {np.mean(predictions == y_test):.3f}"

    return calibration, calibration[:8], evaluate


def _efficientnet(case):
    photos = [efficientnet_lite0.preprocess(p) for p in data.photos().values()]
    calibration = [{"input": x} for x in photos] + [{"input": x[..., ::-1].copy()} for x in photos]
    views = [efficientnet_lite0.preprocess(v) for v in data.evaluation_views().values()]
    with torch.no_grad():
        reference = [case.module(torch.from_numpy(x)).numpy()[0] for x in views]

    def softmax(z):
        e = np.exp(z - z.max())
        return e / e.sum()

    def evaluate(model) -> str:
        out = [model.run(x)["output_0"][0] for x in views]
        top1 = sum(int(o.argmax() == r.argmax()) for o, r in zip(out, reference))
        kl = np.mean([np.sum(softmax(r) * np.log(softmax(r) / softmax(o))) for o, r in zip(out, reference)])
        return f"top-1 {top1}/{len(views)}  mean KL {kl:.4f}"

    return calibration, calibration[:2], evaluate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mnist-cnn", choices=["mnist-cnn", "efficientnet-lite0"])
    parser.add_argument("--random", type=int, default=20, help="random allocations of the ILP's size")
    parser.add_argument("--sensitivity", default="measured", choices=["measured", "hessian"],
                        help="measured output change (any model) or Hessian trace x weight error (PyTorch)")
    args = parser.parse_args()
    case = models.get(args.model)
    calibration, probe, evaluate = _mnist() if args.model == "mnist-cnn" else _efficientnet(case)
    imported = compiler.import_model(case.module, example_inputs=case.example_inputs, input_names=case.input_names)
    costs = layer_costs(imported)
    started = time.perf_counter()
    if args.sensitivity == "hessian":
        batch = torch.from_numpy(np.concatenate([s["input"] for s in calibration]))
        sensitivity = hessian_sensitivity(case.module, batch)
    else:
        sensitivity = measured_sensitivity(imported, probe)
    print(f"{args.model}: {args.sensitivity} sensitivity of {len(costs)} layers x 2 widths in "
          f"{time.perf_counter() - started:.1f} s", flush=True)
    size4, size8 = (sum(c.size_bytes(b) for c in costs) for b in (4, 8))
    budget = (size4 + size8) / 2
    choice = allocate(sensitivity, costs, max_size_bytes=budget)
    print(f"budget {budget:.0f} B (uniform W4 {size4:.0f} B, W8 {size8:.0f} B); "
          f"ILP solved in {choice.solve_seconds * 1e3:.1f} ms", flush=True)

    def row(label: str, bits: dict[str, int]) -> None:
        size = sum(c.size_bytes(bits[c.name]) for c in costs)
        model = compiler.compile(imported, quantize=policy_for(bits), calibration=calibration)
        fours = sum(b == 4 for b in bits.values())
        print(f"{label:20s} {fours:3d}/{len(bits)} layers at W4  {size:10.0f} B  {evaluate(model)}", flush=True)

    row("uniform W8A8", {c.name: 8 for c in costs})
    row("uniform W4A8", {c.name: 4 for c in costs})
    row("ILP", choice.bits)
    baselines = random_allocations(costs, choice.size_bytes, count=args.random)
    print(f"{len(baselines)} random allocations within 1% of the ILP's {choice.size_bytes:.0f} B", flush=True)
    for index, bits in enumerate(baselines):
        row(f"random {index}" + (" (=ILP)" if bits == choice.bits else ""), bits)


if __name__ == "__main__":
    main()
