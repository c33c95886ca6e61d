"""Int8 models end to end, in one run: qc int8 and qc fp32 against onnxruntime fp32, onnxruntime int8 and
PyTorch eager fp32, then the int8 model's heaviest layers as GOP/s and a fraction of this CPU's peak.

    .venv/bin/python benchmarks/int8_models.py [--models resnet18,efficientnet-lite0,minilm] [--repeat 30]
                                               [--w4a8]

Batch 1, 2 threads for every engine, untuned (the int8 layers use ``backends.x86_packed``'s default knobs).
Calibration: EfficientNet-Lite0 and ResNet-18 on the 5 bundled photos and their mirror images (ResNet-18's
weights are random: speed only), MiniLM on 8 of its sentences at sequence length 128; onnxruntime int8 is its
``quantize_static`` (QDQ, per-channel, uint8 activations x int8 weights) on the same samples. ``--w4a8`` also
times qc's W4A8 compile (4-bit weights stored two per byte, ``passes.int4``) in the same run: its
"peer/qc-int8" column is then W4A8 over W8A8.

The engines' timed runs are interleaved in rounds (``compiler.bench``). The 2-thread int8 peak is measured
again after each model, next to the 1-thread peak of the start: where the two are about equal, the host ran
both vCPUs on one physical core during that model (a state of these shared guests that lasts seconds to
minutes), and every engine's figures for it are of that state.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

import compiler
from backends import host_target
from backends.peak import measure_peak
from compiler.bench import bench
from compiler.quantization.bit_allocation import layer_costs
from compiler.quantization.layer_latency import layer_kernel_times
from compiler.sources import resolve
from models import data, efficientnet_lite0, minilm


def calibration(name: str) -> list[dict[str, np.ndarray]]:
    if name == "minilm":
        tokens = minilm.tokenize(data.sentences()[:8])
        return [{k: v[i:i + 1] for k, v in tokens.items()} for i in range(8)]
    photos = [efficientnet_lite0.preprocess(p) for p in data.photos().values()]
    return [{"input": x} for x in photos] + [{"input": x[..., ::-1].copy()} for x in photos]


def top_layers(model, imported, samples, peak_gops: float | None, count: int = 5) -> list[dict]:
    """The ``count`` slowest quantized layers: kernel time, GOP/s (2 x MACs) and fraction of the int8 peak."""
    kernels = layer_kernel_times(model, model.prepare(samples[0]), 5, 30)
    rows = []
    for cost in layer_costs(imported):
        ms = kernels[cost.name]  # the kernel that carries the layer's name
        gops = 2 * cost.macs / (ms / 1e3) / 1e9
        rows.append({"layer": cost.name, "ms": round(ms, 4), "gops": round(gops, 1),
                     "fraction_of_peak": None if not peak_gops else round(gops / peak_gops, 3)})
    return sorted(rows, key=lambda r: -r["ms"])[:count]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet18,efficientnet-lite0,minilm")
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--w4a8", action="store_true", help="also time the W4A8 compile")
    args = parser.parse_args()
    log = sys.stderr if args.json else sys.stdout
    one_thread = measure_peak(host_target(1))
    peak = measure_peak(host_target(2))
    print(f"peak, 2 threads: int8 {peak.int8_gops} GOP/s ({peak.int8_instruction}), fp32 {peak.fp32_gflops} "
          f"GFLOP/s ({peak.fp32_instruction}); 1 thread: int8 {one_thread.int8_gops} GOP/s", flush=True, file=log)
    report = []
    for name in args.models.split(","):
        source = resolve(name)
        imported = compiler.import_model(source)
        samples = calibration(name)
        int8 = compiler.compile(imported, quantize="w8a8", calibration=samples)
        fp32 = compiler.compile(imported)
        layers = top_layers(int8, imported, samples, peak.int8_gops)  # before the peers' thread pools spin
        variants = [compiler.compile(imported, quantize="w4a8", calibration=samples)] if args.w4a8 else []
        rows = bench(int8, source, model_name=name, repeat=args.repeat, threads=2, float_model=fp32,
                     calibration=samples, variants=variants)
        after = measure_peak(host_target(2)).int8_gops
        if after and one_thread.int8_gops:
            print(f"{name}: 2-thread int8 peak after timing {after} GOP/s ({after / one_thread.int8_gops:.2f}x "
                  "the 1-thread peak)", flush=True, file=log)
        report.append({"model": name, "rows": [r.to_json() for r in rows], "top_layers": layers,
                       "int8_peak_after_gops": after})
        if not args.json:
            print(f"\n{name}")
            for r in rows:
                ratio = "-" if r.ratio_vs_qc is None else f"{r.ratio_vs_qc:.3f}"
                print(f"  {r.engine:14s} {r.precision:9s} median {r.median_ms:8.3f} ms  p90 {r.p90_ms:8.3f} ms  "
                      f"peer/qc-int8 {ratio}")
            for layer in layers:
                fraction = "-" if layer["fraction_of_peak"] is None else f"{layer['fraction_of_peak']:.0%}"
                print(f"  layer {layer['layer']:12s} {layer['ms']:7.3f} ms {layer['gops']:7.1f} GOP/s "
                      f"{fraction} of int8 peak")
    if args.json:
        print(json.dumps({"peak": peak.to_json(), "peak_1_thread": one_thread.to_json(), "models": report}, indent=2))


if __name__ == "__main__":
    main()
