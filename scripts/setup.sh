#!/usr/bin/env bash
# Create .venv and install qc with everything the demo and the tests use (idempotent, offline-safe pins).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  "${PYTHON:-python3}" -m venv .venv
fi
pip_install() { .venv/bin/pip install --quiet --disable-pip-version-check "$@"; }
pip_install --upgrade pip
pip_install torch==2.13.0   # the CPU build; installed first so no dependency pulls a CUDA build
pip_install -e '.[all]' -e examples/qc_plugin_example
# Third-party ONNX files for tests and benchmarks (models/third_party.py): only the files are used, so the
# packages come without their dependencies (two OpenCV builds, shapely, pyclipper: none is imported).
pip_install --no-deps nudenet==3.4.2 rapidocr_onnxruntime==1.4.4
echo "setup: .venv ready ($(.venv/bin/python -c 'import tvm; print("TVM", tvm.__version__)'))"
