#!/usr/bin/env bash
# The main job: set up, compile EfficientNet-Lite0 (ImageNet weights) for this CPU, classify real photos with
# the artifact, then compile it to integers (W8A8, calibrated on the bundled photos) and benchmark int8 and
# fp32 against onnxruntime fp32, onnxruntime int8 and PyTorch in the same run.
# Tuning budget: QC_TUNE_TRIALS (default 0 = untuned); the databases in build/tuning are reused by later runs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
QC=.venv/bin/qc
TRIALS="${QC_TUNE_TRIALS:-0}"
TUNE_ARGS=()
if [ "$TRIALS" -gt 0 ]; then TUNE_ARGS=(--tune-trials "$TRIALS" --work-dir build/tuning); fi
$QC compile efficientnet-lite0 -o build/efficientnet-lite0 "${TUNE_ARGS[@]}"
$QC info build/efficientnet-lite0
.venv/bin/python examples/classify_photos.py build/efficientnet-lite0
.venv/bin/python benchmarks/calibration_sets.py build/calib > /dev/null
$QC bench peak
$QC bench efficientnet-lite0 --quantize w8a8 --calib build/calib/efficientnet-lite0.npz --repeat 30 --warmup 5 \
  "${TUNE_ARGS[@]}"
