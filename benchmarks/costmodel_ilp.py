"""The ILP's latency term from the cost model, on a model the cost model never saw: predicted against measured.

    .venv/bin/python benchmarks/costmodel_ilp.py [--model efficientnet-lite0] [--store RECORDS.jsonl]
                                                 [--budgets 10] [--json]

1. The cost model is trained on the store's records of this CPU and kernel templates without the held-out
   model's and without any record whose (op, shapes, widths) key the held-out model has (leave-one-out).
2. The latency table is predicted (``predict_layer_latency``, at the reference state, as ``compile`` does)
   and timed: the latency term's cost in an allocation (the peak measured now is printed beside it). It is also measured (``measure_layer_latency``: every layer
   kernel compiled at 4 and 8 bits and timed).
3. Size budgets: ``--budgets`` weight sizes evenly between uniform W4 and uniform W8; the ILP allocates each
   (sensitivity measured on 2 calibration samples); the allocation is compiled and its whole-model median
   timed; the predicted latency (table's overhead + the chosen kernels) is compared with it.
4. Latency budgets: as many budgets evenly between the measured table's fastest and slowest allocation;
   the ILP allocates each with the predicted table and with the measured one; the two allocations are
   compared layer by layer (an infeasible budget for one table and not the other counts as different).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import numpy as np

import models
from backends.peak import measure_peak
from compiler.bench import median_ms
from compiler.costmodel.collect import load_records
from compiler.costmodel.model import CostModel, held_out_training
from compiler.quantization.bit_allocation import AllocationError, allocate, layer_costs, measured_sensitivity
from compiler.quantization.layer_latency import measure_layer_latency, predict_layer_latency
from compiler.quantization.quantize import compile_quantized
from frontends import from_torch
from models import calibration


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="efficientnet-lite0")
    parser.add_argument("--store", help="records (default: the cache's)")
    parser.add_argument("--budgets", type=int, default=10)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    records = load_records(args.store)
    if not any(r.source == args.model for r in records):
        raise SystemExit(f"no records of {args.model} in the store: it cannot be held out")
    train, dropped = held_out_training(records, args.model)
    cost_model = CostModel.train(train)

    case = models.get(args.model)
    imported = from_torch(case.module, case.example_inputs, case.input_names)
    samples = calibration.samples(args.model)
    peak = measure_peak()
    started = time.perf_counter()
    predicted = predict_layer_latency(imported, cost_model)  # at the model's reference state, as compile does
    predict_seconds = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as cache:
        started = time.perf_counter()
        measured = measure_layer_latency(imported, samples, cache_dir=cache)
        measure_seconds = time.perf_counter() - started
    sensitivity = measured_sensitivity(imported, samples[:2])
    costs = layer_costs(imported)

    small, large = (sum(c.size_bytes(b) for c in costs) for b in (4, 8))
    size_rows = []
    for budget in np.linspace(small, large, args.budgets):
        choice = allocate(sensitivity, costs, max_size_bytes=float(budget))
        model = compile_quantized(imported, samples[:2], choice.policy())
        arrays = model.prepare(samples[0])
        whole = median_ms(lambda: model.call(arrays), 30, 5)
        guess = predicted.predict(choice.bits)
        size_rows.append({"size_budget": round(float(budget)), "w4_layers": sum(b == 4 for b in choice.bits.values()),
                          "predicted_ms": round(guess, 4), "measured_ms": round(whole, 4),
                          "error": round(guess / whole - 1, 4)})

    fastest = measured.overhead_ms + sum(min(measured.layer_ms[(c.name, b)] for b in (4, 8)) for c in costs)
    slowest = measured.overhead_ms + sum(max(measured.layer_ms[(c.name, b)] for b in (4, 8)) for c in costs)
    latency_rows = []
    for budget in np.linspace(fastest, slowest, args.budgets):
        chosen = {}
        for label, table in (("predicted", predicted), ("measured", measured)):
            try:
                chosen[label] = allocate(sensitivity, costs, max_latency_ms=float(budget), latency=table).bits
            except AllocationError:
                chosen[label] = None
        differ = None if None in chosen.values() else sum(chosen["predicted"][n] != chosen["measured"][n]
                                                         for n in chosen["measured"])
        latency_rows.append({"latency_budget_ms": round(float(budget), 4), "same": chosen["predicted"] == chosen["measured"],
                             "layers_differing": differ,
                             "feasible": {k: v is not None for k, v in chosen.items()}})

    errors = np.abs([row["error"] for row in size_rows])
    result = {"model": args.model, "train_records": len(train), "dropped_records": dropped,
              "peak_int8_gops": peak.int8_gops, "predict_seconds": round(predict_seconds, 2),
              "measure_seconds": round(measure_seconds, 1),
              "uniform_ms": {"predicted": {f"w{b}": round(v, 4) for b, v in predicted.uniform_ms.items()},
                             "measured": {f"w{b}": round(v, 4) for b, v in measured.uniform_ms.items()}},
              "size_budgets": size_rows, "median_abs_error": round(float(np.median(errors)), 4),
              "max_abs_error": round(float(errors.max()), 4), "latency_budgets": latency_rows,
              "same_allocation": f"{sum(r['same'] for r in latency_rows)}/{len(latency_rows)}"}
    if args.json:
        print(json.dumps(result, indent=1))
        return
    print(f"{args.model} held out: {len(train)} training records; latency table predicted in "
          f"{predict_seconds:.2f} s (measured in {measure_seconds:.1f} s); uniform W4 / W8 predicted "
          f"{predicted.uniform_ms[4]:.3f} / {predicted.uniform_ms[8]:.3f} ms, measured {measured.uniform_ms[4]:.3f} / "
          f"{measured.uniform_ms[8]:.3f}")
    print(f"{'size budget':>12s} {'W4 layers':>9s} {'predicted':>9s} {'measured':>9s} {'error':>7s}")
    for row in size_rows:
        print(f"{row['size_budget']:12d} {row['w4_layers']:9d} {row['predicted_ms']:9.3f} {row['measured_ms']:9.3f} "
              f"{row['error']:+7.1%}")
    print(f"whole-model error: median {result['median_abs_error']:.1%}, max {result['max_abs_error']:.1%}")
    print(f"latency budgets: the predicted table's allocation is the measured table's on {result['same_allocation']}")
    for row in latency_rows:
        print(f"  {row['latency_budget_ms']:8.3f} ms  same={row['same']}  layers differing={row['layers_differing']}  "
              f"feasible={row['feasible']}")


if __name__ == "__main__":
    main()
