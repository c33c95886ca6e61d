"""Quality of integer-only W8A8 quantization on EfficientNet-Lite0 and MiniLM, against float.

    .venv/bin/python benchmarks/quantization_quality.py [--observers minmax,percentile,mse]

EfficientNet-Lite0: the bundled photos (calibrated on them and their mirror images; no other images ship
offline): top-1 agreement, top-5 overlap and mean KL(float || quantized) of the softmax; onnxruntime's
``quantize_static`` (QDQ, per-channel, uint8 activations x int8 weights, same calibration images) as the peer.
MiniLM: 26 real sentences (calibrated on the first 8): cosine of each embedding with float, and the
Spearman correlation of all pairwise sentence similarities (is the ranking of pairs preserved?).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

import compiler
import models
from models import data, efficientnet_lite0, minilm
from passes.quant_policy import QuantPolicy


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max())
    return e / e.sum()


def _photos_and_calibration() -> tuple[dict[str, np.ndarray], list[dict[str, np.ndarray]]]:
    photos = {k: efficientnet_lite0.preprocess(v) for k, v in data.photos().items()}
    calibration = [{"input": x} for x in photos.values()]
    calibration += [{"input": np.ascontiguousarray(x[..., ::-1])} for x in photos.values()]
    return photos, calibration


def _image_metrics(engine: str, ref: dict[str, np.ndarray], out: dict[str, np.ndarray]) -> str:
    top1 = sum(int(out[k].argmax() == ref[k].argmax()) for k in ref)
    top5 = np.mean([len(set(np.argsort(out[k])[-5:]) & set(np.argsort(ref[k])[-5:])) for k in ref])
    kl = np.mean([np.sum(_softmax(ref[k]) * np.log(_softmax(ref[k]) / _softmax(out[k]))) for k in ref])
    return f"efficientnet-lite0 {engine:28s} top-1 {top1}/{len(ref)}  top-5 overlap {top5:.1f}/5  mean KL {kl:.4f}"


def efficientnet(observer: str) -> str:
    case = models.get("efficientnet-lite0")
    photos, calibration = _photos_and_calibration()
    with torch.no_grad():
        ref = {k: case.module(torch.from_numpy(x)).numpy()[0] for k, x in photos.items()}
    model = compiler.compile(case.module, example_inputs=case.example_inputs, input_names=case.input_names,
                             quantize=QuantPolicy.from_scheme("w8a8", observer), calibration=calibration)
    return _image_metrics(f"qc w8a8 {observer}", ref, {k: model.run(x)["output_0"][0] for k, x in photos.items()})


def efficientnet_onnxruntime(tmp: Path) -> str:
    """onnxruntime's quantize_static on the same calibration images: QDQ, per-channel, uint8 x int8."""
    import onnxruntime as ort

    from compiler.bench import ort_quantize_static

    case = models.get("efficientnet-lite0")
    photos, calibration = _photos_and_calibration()
    float_path = models.export_onnx(case, tmp / "float.onnx")
    int8_path = ort_quantize_static(float_path, calibration, tmp / "int8.onnx")
    float_session = ort.InferenceSession(str(float_path), providers=["CPUExecutionProvider"])
    int8_session = ort.InferenceSession(str(int8_path), providers=["CPUExecutionProvider"])
    ref = {k: float_session.run(None, {"input": x})[0][0] for k, x in photos.items()}
    out = {k: int8_session.run(None, {"input": x})[0][0] for k, x in photos.items()}
    return _image_metrics("onnxruntime quantize_static", ref, out)


def minilm_quality(observer: str) -> str:
    case = models.get("minilm")
    feeds = [minilm.tokenize([s]) for s in data.sentences()]
    with torch.no_grad():
        ref = np.stack([case.module(*(torch.from_numpy(f[n]) for n in case.input_names)).numpy()[0] for f in feeds])
    model = compiler.compile(case.module, example_inputs=case.example_inputs, input_names=case.input_names,
                             quantize=QuantPolicy.from_scheme("w8a8", observer), calibration=feeds[:8])
    out = np.stack([model.run(f)["output_0"][0] for f in feeds])
    cosine = np.sum(ref * out, axis=1) / np.linalg.norm(ref, axis=1) / np.linalg.norm(out, axis=1)
    pairs = np.triu_indices(len(feeds), 1)
    unit = lambda e: e / np.linalg.norm(e, axis=1, keepdims=True)  # noqa: E731
    rho = spearmanr((unit(ref) @ unit(ref).T)[pairs], (unit(out) @ unit(out).T)[pairs]).correlation
    return (f"minilm             w8a8 {observer:10s} cosine mean {cosine.mean():.4f} min {cosine.min():.4f}  "
            f"pair-similarity Spearman {rho:.4f}  ({len(feeds)} sentences)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--observers", default="minmax,percentile,mse")
    parser.add_argument("--no-onnxruntime", action="store_true", help="skip the quantize_static peer")
    args = parser.parse_args()
    if not args.no_onnxruntime:
        with tempfile.TemporaryDirectory() as tmp:
            print(efficientnet_onnxruntime(Path(tmp)), flush=True)
    for observer in args.observers.split(","):
        print(efficientnet(observer), flush=True)
        print(minilm_quality(observer), flush=True)


if __name__ == "__main__":
    main()
