#!/usr/bin/env bash
# Set up (idempotent) and run the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# the extended tests (W4A8 oracle on the large models) run with: bash scripts/test.sh -m extended
if [[ " $* " == *" -m "* ]]; then
  exec .venv/bin/python -m pytest -q --durations=30 "$@"
fi
exec .venv/bin/python -m pytest -q --durations=30 -m "not extended" "$@"
