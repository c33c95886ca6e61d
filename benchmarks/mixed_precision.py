"""Mixed precision by ILP on the MNIST CNN: accuracy and weight size of uniform W8A8, uniform W4A8, the ILP
choice at a size budget halfway between them, and random allocations that fit the same budget.

    .venv/bin/python benchmarks/mixed_precision.py [--seeds 5]

Calibrates (and measures sensitivity) on the first 64 training digits; evaluates on the 1,000 held-out ones.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import compiler
import models
from compiler.bit_allocation import Allocation, allocate, layer_costs, measured_sensitivity
from models import mnist_cnn
from passes.quant_policy import QuantPolicy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args()
    case = models.get("mnist-cnn")
    x_train, _, x_test, y_test = mnist_cnn.load_split()
    calibration = [{"input": d[None]} for d in x_train[:64]]
    imported = compiler.import_model(case.module, example_inputs=case.example_inputs, input_names=case.input_names)
    costs = layer_costs(imported)
    started = time.perf_counter()
    sensitivity = measured_sensitivity(imported, calibration[:8])
    print(f"sensitivity: {len(sensitivity)} (layer, width) pairs in {time.perf_counter() - started:.2f} s")
    size4, size8 = (sum(c.size_bytes(b) for c in costs) for b in (4, 8))
    budget = (size4 + size8) / 2
    choice = allocate(sensitivity, costs, max_size_bytes=budget)
    print(f"budget {budget:.0f} B (W4 {size4:.0f} B, W8 {size8:.0f} B); ILP solved in {choice.solve_seconds * 1e3:.1f} ms")

    def accuracy(policy: QuantPolicy) -> float:
        model = compiler.compile(imported, quantize=policy, calibration=calibration)
        return float(np.mean([model.run(d[None])["output_0"].argmax() == y for d, y in zip(x_test, y_test)]))

    def row(label: str, bits: dict[str, int]) -> float:
        size = sum(c.size_bytes(bits[c.name]) for c in costs)
        acc = accuracy(Allocation(bits, size, 0, 0, 0).policy())
        print(f"{label:22s} {' '.join(f'{bits[c.name]}' for c in costs):8s} {size:8.0f} B  accuracy {acc:.3f}")
        return acc

    print(f"{'allocation':22s} {'W bits':8s} {'size':>10s}")
    row("uniform W8A8", {c.name: 8 for c in costs})
    row("uniform W4A8", {c.name: 4 for c in costs})
    row("ILP", choice.bits)
    randoms = []
    for seed in range(args.seeds):
        rng = np.random.default_rng(seed)
        while True:
            bits = {c.name: int(rng.choice([4, 8])) for c in costs}
            if sum(c.size_bytes(bits[c.name]) for c in costs) <= budget:
                break
        randoms.append(row(f"random (seed {seed})", bits))
    print(f"random mean accuracy {np.mean(randoms):.3f}")


if __name__ == "__main__":
    main()
