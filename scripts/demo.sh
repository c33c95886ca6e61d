#!/usr/bin/env bash
# The main job: set up, compile EfficientNet-Lite0 (ImageNet weights) for this CPU, classify two real
# photos with the artifact, and benchmark it against onnxruntime and PyTorch in the same run.
# Tuning budget: QC_TUNE_TRIALS (default 0 = untuned); the database in build/tuning is reused by later runs.
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
$QC bench build/efficientnet-lite0 --repeat 30 --warmup 5
