#!/usr/bin/env bash
# Runs the whole test suite once per Keras backend: jax, tensorflow, torch.
# Usage: bash tests/run_backends.sh [extra pytest arguments]
set -u
cd "$(dirname "$0")/.."
status=0
for backend in jax tensorflow torch; do
  echo "===== KERAS_BACKEND=$backend ====="
  KERAS_BACKEND=$backend python -m pytest -q -p no:cacheprovider "$@" || status=1
done
exit $status
