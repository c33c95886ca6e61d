"""Number formats on real models: per layer and for the whole model, what storing weights and inputs in each
format costs (``compiler.quantization.report.format_report``), with each model's own metric.

    .venv/bin/python benchmarks/formats.py [--models mnist-cnn,efficientnet-lite0,minilm]
                                           [--formats int8,int4,...] [--views 40] [--plots build/formats]

Formats are simulated (``compiler.quantization.formats``), their scales taken from the tensors themselves
(per channel / tensor, or per MX block of 32), so no calibration set is involved: every sample below is held
out. Metrics against the float model, both run by the numpy interpreter:
MNIST CNN: accuracy on the first 500 test digits (float's beside it) - EfficientNet-Lite0: top-1 agreement
with float and mean KL(float || format) on the first ``--views`` of the 200 evaluation views
(``models.data.evaluation_views``) - MiniLM: embedding cosine with float (mean) and the Spearman correlation
of pair similarities (``models.minilm.embedding_agreement``) on the 66 held-out sentences (the bundled 18
past the 8 that calibrate elsewhere, and the 48 ``evaluation_sentences``). Per layer: the median and the
minimum over layers of each layer's output SQNR with only that layer in the format. The "INT v.s. FP" pairs
(MXINT8 / MXFP8 E4M3 at 8 bits, MXINT4 / MXFP4 at 4 bits, one block size) are counted layer by layer.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import compiler
from compiler.quantization.formats import FORMATS
from compiler.quantization.report import format_report, plot_formats
from compiler.sources import resolve
from models import data, efficientnet_lite0, minilm, mnist_cnn


def samples(name: str, views: int) -> tuple[list[dict], object]:
    """The held-out samples of ``name`` and what its metric needs (labels, or None)."""
    if name == "mnist-cnn":
        _, _, x_test, y_test = mnist_cnn.load_split()
        return [{"input": x[None]} for x in x_test[:500]], y_test[:500]
    if name == "efficientnet-lite0":
        chosen = data.evaluation_views()
        return [{"input": efficientnet_lite0.preprocess(chosen[k])} for k in sorted(chosen)[:views]], None
    sentences = data.sentences()[8:] + data.evaluation_sentences()
    return [minilm.tokenize([s]) for s in sentences], None


def metric(name: str, reference: list, outputs: list, labels) -> str:
    ref = np.concatenate([o[0] for o in reference])
    out = np.concatenate([o[0] for o in outputs])
    if name == "mnist-cnn":
        return f"accuracy {np.mean(out.argmax(1) == labels):.3f} (float {np.mean(ref.argmax(1) == labels):.3f})"
    if name == "efficientnet-lite0":
        p, q = (np.exp(x - x.max(1, keepdims=True)) for x in (ref, out))
        p, q = p / p.sum(1, keepdims=True), q / q.sum(1, keepdims=True)
        kl = np.sum(p * (np.log(p) - np.log(q)), axis=1).mean()
        return f"top-1 agreement {np.mean(ref.argmax(1) == out.argmax(1)):.3f}, KL {kl:.4f}"
    agreement = minilm.embedding_agreement(ref, out)
    return f"cosine {agreement['cosine_mean']:.4f}, pair Spearman {agreement['pair_spearman']:.4f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="mnist-cnn,efficientnet-lite0,minilm")
    parser.add_argument("--formats", default=",".join(FORMATS))
    parser.add_argument("--views", type=int, default=40)
    parser.add_argument("--plots", default="build/formats", help="directory for one PNG per model")
    args = parser.parse_args()
    formats = args.formats.split(",")
    for name in args.models.split(","):
        held_out, labels = samples(name, args.views)
        report = format_report(compiler.import_model(resolve(name)), held_out, formats)
        path = plot_formats(report, Path(args.plots) / f"{name}.png", f"{name}: number formats")
        print(f"\n{name}: {len(held_out)} held-out samples, {len(report.layers)} layers (plot: {path})")
        print(f"  {'format':11s} {'layer median':>12s} {'layer min':>9s} {'model SQNR':>10s}  model metric")
        for f in formats:
            values = [r.sqnr_db[f] for r in report.layers]
            print(f"  {f:11s} {np.median(values):12.1f} {min(values):9.1f} {report.model_sqnr_db[f]:10.1f}  "
                  f"{metric(name, report.model_outputs['float'], report.model_outputs[f], labels)}")
        for wide, narrow in (("mxint8", "mxfp8_e4m3"), ("mxint4", "mxfp4")):
            if wide in formats and narrow in formats:
                ahead = sum(r.sqnr_db[wide] > r.sqnr_db[narrow] for r in report.layers)
                print(f"  {wide} ahead of {narrow} on {ahead} of {len(report.layers)} layers; whole model "
                      f"{report.model_sqnr_db[wide]:.1f} vs {report.model_sqnr_db[narrow]:.1f} dB")


if __name__ == "__main__":
    main()
