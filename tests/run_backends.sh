#!/usr/bin/env bash
# Runs the whole test suite once per Keras backend: jax, tensorflow, torch.
# Tests marked backend_agnostic (file formats, loaders: numpy only, no backend code) run on the
# first backend only; the others run on all three.
# Usage: bash tests/run_backends.sh [extra pytest arguments]
#   (a -m expression given here replaces the backend_agnostic selection on every backend)
# Fast local subset: KERAS_BACKEND=jax python -m pytest -q -m "not slow"
# With pytest-xdist installed (the dev and all extras) the tests of one backend are spread over
# one worker per CPU core (KERAS_MSAM_TEST_WORKERS=N overrides; 1 runs them in this process).
set -u
cd "$(dirname "$0")/.."
status=0
user_marks=0
for argument in "$@"; do
  case "$argument" in -m|-m*) user_marks=1 ;; esac
done
parallel=()
workers="${KERAS_MSAM_TEST_WORKERS:-auto}"
if [ "$workers" != 1 ] && python -c "import xdist" 2>/dev/null; then
  parallel=(-n "$workers")
fi
first=1
for backend in jax tensorflow torch; do
  echo "===== KERAS_BACKEND=$backend ====="
  selection=()
  if [ "$first" = 0 ] && [ "$user_marks" = 0 ]; then
    selection=(-m "not backend_agnostic")
  fi
  KERAS_BACKEND=$backend python -m pytest -q -p no:cacheprovider "${parallel[@]}" "${selection[@]}" "$@" || status=1
  first=0
done
exit $status
