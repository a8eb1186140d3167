#!/usr/bin/env bash
# The package as a user installs it: build the wheel and the sdist, install the wheel into a
# fresh virtualenv with one backend (JAX) and run the quickstart (`keras-msam compare`) from it,
# outside the source tree. Usage: bash .ci/package_check.sh (from any directory).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
python -m pip install --quiet build
python -m build --outdir "$work/dist" "$root" >/dev/null
ls "$work/dist"
test -n "$(ls "$work"/dist/keras_msam-*.tar.gz)"
python3 -m venv "$work/venv"
"$work/venv/bin/python" -m pip install --quiet --upgrade pip
"$work/venv/bin/python" -m pip install --quiet "$work"/dist/keras_msam-*.whl "jax>=0.4.30"
cd "$work"
"$work/venv/bin/python" -m keras_msam --version
KERAS_BACKEND=jax "$work/venv/bin/keras-msam" compare --quiet --no-plots
test -f "$(ls "$work"/runs/*/results.csv | head -1)"
echo "package check: wheel and sdist built, the wheel's quickstart ran in a fresh virtualenv"
