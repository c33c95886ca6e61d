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
echo "setup: .venv ready ($(.venv/bin/python -c 'import tvm; print("TVM", tvm.__version__)'))"
