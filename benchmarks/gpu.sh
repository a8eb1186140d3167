#!/usr/bin/env bash
# Step time and peak memory on a GPU for every backend that sees one, in under 10 minutes
# (issue 14, item 7). Nothing else in the project needs a GPU; on a machine without one this
# script says so per backend and measures nothing.
#
#   bash benchmarks/gpu.sh [OUTPUT_DIR]        # default: benchmarks/results/gpu
#
# Needs a GPU build of each backend to measure (jax[cuda12], tensorflow[and-cuda], a CUDA torch).
# Writes OUTPUT_DIR/device.txt (nvidia-smi), step_time_gpu_<backend>.json (benchmarks/step_time.py,
# one process, 3 timed epochs of 30 steps) and peak_memory_gpu_<backend>.json
# (benchmarks/peak_memory.py, one process per variant: on a GPU it reads the allocator's peak).
# Each part has its own time limit so that the whole stays under 10 minutes.
set -u
cd "$(dirname "$0")/.."
out="${1:-benchmarks/results/gpu}"
mkdir -p "$out"
start=$SECONDS
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null \
  || echo "nvidia-smi not found"; } > "$out/device.txt"
cat "$out/device.txt"

probe_jax='import jax; print(any(d.platform == "gpu" for d in jax.devices()))'
probe_tensorflow='import tensorflow as tf; print(bool(tf.config.list_physical_devices("GPU")))'
probe_torch='import torch; print(torch.cuda.is_available())'
gpu_backends=()
for backend in jax tensorflow torch; do
  probe_name="probe_$backend"
  seen=$(timeout 120 python -c "${!probe_name}" 2>/dev/null | tail -1)
  if [ "$seen" = "True" ]; then
    gpu_backends+=("$backend")
    echo "$backend: GPU found"
  else
    echo "$backend: no GPU visible (not measured)"
  fi
done
if [ "${#gpu_backends[@]}" = 0 ]; then
  echo "no backend sees a GPU: nothing measured"
  exit 0
fi
# per backend: 120 s of step times, 60 s of peak memory (3 x 180 s + the probes < 10 min)
for backend in "${gpu_backends[@]}"; do
  timeout 120 python benchmarks/step_time.py --backends "$backend" --repeats 1 --epochs 3 \
    --json "$out/step_time_gpu_$backend.json" || echo "step_time $backend: rc $?"
  timeout 60 python benchmarks/peak_memory.py --backend "$backend" --repeats 1 \
    --json "$out/peak_memory_gpu_$backend.json" || echo "peak_memory $backend: rc $?"
done
echo "gpu.sh: $((SECONDS - start)) s"
