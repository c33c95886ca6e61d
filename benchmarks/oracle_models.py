"""The per-op oracle on every registry model at W8A8 and W4A8: one table row per model and scheme.

    .venv/bin/python benchmarks/oracle_models.py [--models mnist-cnn,minilm] [--schemes w8a8,w4a8] [--samples 1]

Calibration as the tests do it (``models.calibration``): MNIST on its first 64 training digits; the image
models on three bundled photos (chelsea, coffee, china) and their mirror images, each through its own
preprocessing; MiniLM on the first 8 bundled sentences. The oracle runs on the first ``--samples`` calibration samples (its per-op check needs the
integer executable's own tensors, not held-out data). Columns: ops within their bound, the worst
|q_int - q_sim| / bound, end-to-end SQNR and cosine of the integer executable against the QDQ simulation,
SQNR of each against the float model, production kernels found unchanged in the debug build, seconds.
"""

from __future__ import annotations

import argparse
import json
import time

import compiler
import models
from compiler.quantization.oracle import verify
from models.calibration import samples as calibration

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(models.names()))
    parser.add_argument("--schemes", default="w8a8,w4a8")
    parser.add_argument("--samples", type=int, default=1)
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args()
    rows = []
    print("| model | scheme | ops within bound | worst diff / bound | e2e SQNR / cosine vs simulation "
          "| SQNR vs float: integer / simulation | kernels unchanged in debug build | verdict | s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in args.models.split(","):
        case = models.get(name)
        imported = compiler.import_model(case.module, example_inputs=case.example_inputs,
                                         input_names=case.input_names)
        for scheme in args.schemes.split(","):
            started = time.perf_counter()
            report = verify(imported, calibration(name), scheme, max_samples=args.samples)
            seconds = time.perf_counter() - started
            worst = max(report.rows, key=lambda r: r.max_diff / max(r.bound, 1))
            row = {"model": name, "scheme": scheme, "ok": report.ok, "seconds": round(seconds, 1),
                   **report.manifest()}
            rows.append(row)
            print(f"| {name} | {scheme} | {sum(r.ok for r in report.rows)}/{len(report.rows)} | "
                  f"{worst.max_diff}/{worst.bound} ({worst.anchor}) | {report.sqnr_db:.1f} dB / {report.cosine:.4f} | "
                  f"{report.float_sqnr_db:.1f} / {report.simulation_float_sqnr_db:.1f} dB | "
                  f"{report.kernels_identical}/{report.kernels} | {'PASS' if report.ok else 'FAIL'} | {seconds:.0f} |",
                  flush=True)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(rows, handle, indent=1)


if __name__ == "__main__":
    main()
