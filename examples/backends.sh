#!/usr/bin/env bash
# The same script on each Keras backend: the backend is chosen by KERAS_BACKEND before Keras
# is imported (the CLI's --backend flag sets it for you).
#   bash examples/backends.sh
set -euo pipefail
cd "$(dirname "$0")/.."
for backend in jax tensorflow torch; do
  echo "===== $backend ====="
  KERAS_BACKEND=$backend python examples/quickstart.py --epochs 3
  keras-msam compare --backend "$backend" --epochs 3 --quiet --run-dir "runs/backends-$backend"
done
