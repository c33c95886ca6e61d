"""Quality of integer-only W8A8 quantization on EfficientNet-Lite0 and MiniLM, against float, held out.

    .venv/bin/python benchmarks/quantization_quality.py [--observers minmax,percentile,entropy,mse]
                                                        [--ort-methods minmax,entropy,percentile] [--json]

EfficientNet-Lite0: calibrated on the 5 bundled photos (``models.data.photos``) and their mirror images (10
samples), scored on the held-out set (``models.data.evaluation_views``: 200 views, crops and mirrors, of 10
other scikit-image photos): top-1 agreement with the float model (PyTorch) and mean KL(float || quantized)
of the softmax, per photo too. The peer is onnxruntime's ``quantize_static`` (QDQ, per-channel, uint8
activations x int8 weights) on the same 10 calibration samples, with each of its calibration methods; the
same views go through every engine. qc minus onnxruntime is given with a paired bootstrap interval (95%,
10,000 resamples of the 200 views) for the two defaults (min/max each) and for each engine's best method
(the lowest mean KL).
MiniLM: calibrated on the first 8 of the 26 bundled sentences, scored on the other 18 and the 48 evaluation
sentences (``models.data.evaluation_sentences``; 66 held out): cosine of each embedding with float, and the
Spearman correlation of all pairwise sentence similarities (``models.minilm.embedding_agreement``).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import torch

import compiler
import models
from models import data, efficientnet_lite0, minilm
from passes.quant_policy import QuantPolicy

RESAMPLES = 10_000


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _calibration() -> list[dict[str, np.ndarray]]:
    photos = [efficientnet_lite0.preprocess(v) for v in data.photos().values()]
    return [{"input": x} for x in photos] + [{"input": np.ascontiguousarray(x[..., ::-1])} for x in photos]


def _scores(reference: np.ndarray, logits: np.ndarray) -> dict[str, np.ndarray]:
    """Per view: 1 where the top-1 class is float's, and KL(float || quantized) of the softmax."""
    p, q = _softmax(reference.astype(np.float64)), _softmax(logits.astype(np.float64))
    return {"agree": (logits.argmax(1) == reference.argmax(1)).astype(np.float64),
            "kl": np.sum(p * (np.log(p) - np.log(q)), axis=1)}


def _bootstrap(a: np.ndarray, b: np.ndarray, seed: int = 0) -> tuple[float, float, float]:
    """mean(a - b) and its 95% paired bootstrap interval over the views."""
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, a.size, (RESAMPLES, a.size))
    means = (a - b)[picks].mean(axis=1)
    return float((a - b).mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def efficientnet(observers: list[str], ort_methods: list[str], tmp: Path) -> dict:
    import onnxruntime as ort

    from compiler.bench import ort_quantize_static

    case = models.get("efficientnet-lite0")
    calibration = _calibration()
    views = data.evaluation_views()
    keys = list(views)
    inputs = [efficientnet_lite0.preprocess(views[k]) for k in keys]
    with torch.no_grad():
        reference = np.concatenate([case.module(torch.from_numpy(x)).numpy() for x in inputs])
    engines: dict[str, np.ndarray] = {}
    for observer in observers:
        model = compiler.compile(case.module, example_inputs=case.example_inputs, input_names=case.input_names,
                                 quantize=QuantPolicy.from_scheme("w8a8", observer), calibration=calibration)
        engines[f"qc {observer}"] = np.concatenate([model.run(x)["output_0"] for x in inputs])
    float_path = models.export_onnx(case, tmp / "float.onnx")
    for method in ort_methods:
        path = ort_quantize_static(float_path, calibration, tmp / f"int8-{method}.onnx", method=method)
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        engines[f"onnxruntime {method}"] = np.concatenate([session.run(None, {"input": x})[0] for x in inputs])
    scores = {name: _scores(reference, logits) for name, logits in engines.items()}
    photos = sorted({k.split("/")[0] for k in keys})
    of_photo = {p: np.array([k.split("/")[0] == p for k in keys]) for p in photos}
    result = {"views": len(keys), "photos": photos, "calibration_samples": len(calibration), "engines": {}}
    for name, s in scores.items():
        result["engines"][name] = {"agreement": float(s["agree"].mean()), "mean_kl": float(s["kl"].mean()),
                                   "per_photo_agreement": {p: float(s["agree"][m].mean()) for p, m in of_photo.items()}}

    def best(prefix: str) -> str:
        names = [n for n in scores if n.startswith(prefix)]
        return min(names, key=lambda n: scores[n]["kl"].mean())  # KL: every view counts, not only flips

    pairs = {"defaults": ("qc minmax", "onnxruntime minmax"), "best": (best("qc "), best("onnxruntime "))}
    result["comparisons"] = {}
    for label, (ours, theirs) in pairs.items():
        if ours in scores and theirs in scores:
            result["comparisons"][label] = {
                "qc": ours, "onnxruntime": theirs,
                "agreement_difference": _bootstrap(scores[ours]["agree"], scores[theirs]["agree"]),
                "kl_difference": _bootstrap(scores[ours]["kl"], scores[theirs]["kl"])}
    return result


def _print_efficientnet(result: dict) -> None:
    print(f"efficientnet-lite0: {result['views']} held-out views of {len(result['photos'])} photos; calibrated on "
          f"{result['calibration_samples']} samples of other photos")
    print(f"{'engine':24s} {'top-1 agree':>11s} {'mean KL':>8s}   per photo (top-1 agreement)")
    for name, e in result["engines"].items():
        per = " ".join(f"{p[:6]} {a:.2f}" for p, a in e["per_photo_agreement"].items())
        print(f"{name:24s} {e['agreement']:11.3f} {e['mean_kl']:8.4f}   {per}")
    for label, c in result["comparisons"].items():
        (da, alo, ahi), (dk, klo, khi) = c["agreement_difference"], c["kl_difference"]
        print(f"{label}: {c['qc']} - {c['onnxruntime']}: agreement {da:+.3f} [{alo:+.3f}, {ahi:+.3f}], "
              f"KL {dk:+.4f} [{klo:+.4f}, {khi:+.4f}] (95% paired bootstrap)")


def minilm_quality(observer: str) -> str:
    case = models.get("minilm")
    calibration = [minilm.tokenize([s]) for s in data.sentences()[:8]]
    held_out = [minilm.tokenize([s]) for s in data.sentences()[8:] + data.evaluation_sentences()]
    with torch.no_grad():
        ref = np.stack([case.module(*(torch.from_numpy(f[n]) for n in case.input_names)).numpy()[0]
                        for f in held_out])
    model = compiler.compile(case.module, example_inputs=case.example_inputs, input_names=case.input_names,
                             quantize=QuantPolicy.from_scheme("w8a8", observer), calibration=calibration)
    agreement = minilm.embedding_agreement(ref, np.stack([model.run(f)["output_0"][0] for f in held_out]))
    return (f"minilm w8a8 {observer:10s} cosine mean {agreement['cosine_mean']:.4f} min "
            f"{agreement['cosine_min']:.4f}  pair-similarity Spearman {agreement['pair_spearman']:.4f}  "
            f"({len(held_out)} held-out sentences, {len(calibration)} calibrate)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--observers", default="minmax,percentile,entropy,mse")
    parser.add_argument("--ort-methods", default="minmax,entropy,percentile",
                        help="onnxruntime calibration methods ('' to skip the peer)")
    parser.add_argument("--no-minilm", action="store_true")
    parser.add_argument("--json", action="store_true", help="print the EfficientNet-Lite0 result as JSON")
    args = parser.parse_args()
    observers = [o for o in args.observers.split(",") if o]
    with tempfile.TemporaryDirectory() as tmp:
        result = efficientnet(observers, [m for m in args.ort_methods.split(",") if m], Path(tmp))
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        _print_efficientnet(result)
    if not args.no_minilm:
        for observer in observers:
            print(minilm_quality(observer), flush=True)


if __name__ == "__main__":
    main()
