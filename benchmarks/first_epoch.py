"""Does `fit` wait on data? AV-Digits' first epoch against its second, on a cold feature cache.

For each backend, in fresh processes: an empty feature-cache directory (cold: every one of the
2,400 training wavs of ``../shared/data/fsdd`` is decoded), ``zoo.datasets.load("av_digits",
...)``, ``late_fusion_av_cnn`` under `keras_msam.Joint`, compiled and warmed up with one
``fit`` epoch on random arrays of the data's shapes (so compilation, of the
full and of the last partial batch, is not charged to the first epoch), then ``fit`` for two
epochs, each timed by a callback. With ``prefetch=True`` (the loaders' default) the features are
computed in a background thread from ``load`` on, while the model is built; ``prefetch=False``
computes them in the first batch, as before. The target is first / second <= 1.1 with the
default. Medians of ``--repeats`` processes.

    python benchmarks/first_epoch.py [--repeats 3] [--backends jax,tensorflow,torch]
        [--json benchmarks/results/first_epoch_cpu.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FSDD = REPO.parent / "shared" / "data" / "fsdd"

_CHILD = r"""
import json, sys, time
import numpy as np
import keras, keras_msam, zoo

root, prefetch = sys.argv[1], sys.argv[2] == "1"
train = zoo.datasets.load("av_digits", root, "train", batch_size=64, shuffle=True,
                          prefetch=prefetch)
model = zoo.models.create("late_fusion_av_cnn")
trainer = keras_msam.Joint(model)
trainer.compile(optimizer=keras.optimizers.SGD(0.01),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
rng = np.random.default_rng(0)
size = 64 + (train.num_examples % 64)  # a full and the last, partial batch
warm = {m: rng.standard_normal((size, *s)).astype("float32") for m, s in train.input_shapes.items()}
labels = rng.integers(0, 10, size).astype(train.labels.dtype)
trainer.fit(warm, labels, batch_size=64, epochs=1, verbose=0, shuffle=False)

class EpochTimer(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()
    def on_epoch_end(self, epoch, logs=None):
        times.append(time.perf_counter() - self.start)

times = []
trainer.fit(train, epochs=2, verbose=0, shuffle=False, callbacks=[EpochTimer()])
print(json.dumps({"first": times[0], "second": times[1]}))
"""


def one_process(backend: str, prefetch: bool) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "KERAS_BACKEND": backend, "KERAS_MSAM_CACHE_DIR": cache}
        done = subprocess.run(
            [sys.executable, "-c", _CHILD, str(FSDD), "1" if prefetch else "0"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
            cwd=REPO,
        )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--backends", default="jax,tensorflow,torch")
    parser.add_argument("--json", default=None, help="write the results here")
    args = parser.parse_args()
    if not (FSDD / "recordings").is_dir():
        raise SystemExit(f"FSDD recordings not found at {FSDD}")
    results = {}
    print("backend     prefetch  first epoch  second epoch  first/second (median of runs)")
    for backend in args.backends.split(","):
        for prefetch in (True, False):
            runs = [one_process(backend, prefetch) for _ in range(args.repeats)]
            first = statistics.median(r["first"] for r in runs)
            second = statistics.median(r["second"] for r in runs)
            ratio = statistics.median(r["first"] / r["second"] for r in runs)
            key = f"{backend}/{'prefetch' if prefetch else 'no_prefetch'}"
            results[key] = {"first_s": first, "second_s": second, "ratio": ratio, "runs": runs}
            print(
                f"{backend:<11} {str(prefetch):<9} {first * 1e3:8.0f} ms  {second * 1e3:9.0f} ms"
                f"  {ratio:6.2f}"
            )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
