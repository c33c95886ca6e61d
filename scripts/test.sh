#!/usr/bin/env bash
# Set up (idempotent) and run the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# the extended tests (W4A8 oracle on the large models) run with: bash scripts/test.sh -m extended
# two workers, a test file each at a time (QC_TEST_WORKERS=0: one process); the CI machine has 2 cores
workers=(-n "${QC_TEST_WORKERS:-2}" --dist loadfile)
if [[ " $* " == *" -m "* ]]; then
  exec .venv/bin/python -m pytest -q --durations=30 "${workers[@]}" "$@"
fi
exec .venv/bin/python -m pytest -q --durations=30 "${workers[@]}" -m "not extended" "$@"
