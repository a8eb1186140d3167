"""Loader throughput against the training-step rate of the matching zoo model.

Measures, in samples per second on this machine and the current KERAS_BACKEND:

* the CREMA-D loader (OGM-GE format: wav decode + resample to 22,050 Hz + STFT, jpg decode +
  resize to 224 + ImageNet normalisation) on a synthetic data set written in the exact layout
  (2.5 s, 16 kHz wavs and 480x360 jpgs, like the real CREMA-D), against ``cremad_late_resnet18``;
* the AV-Digits loader on the real FSDD recordings (``../shared/data/fsdd``, train split, 2,400
  clips), against ``late_fusion_av_cnn``. Its first epoch is timed in a fresh Python process
  per measurement: the clock starts after the imports (keras, numpy, librosa, scipy, soundfile,
  scikit-learn: once per process, not per sample). Two rates: "delivered" = examples / the
  seconds from the first batch request to the last batch in hand (every wav decoded, the
  log-mel of the whole split, batching: what `fit` waits for), and "with setup" = examples /
  (``zoo.datasets.load`` seconds + those seconds), where load indexes the 3,000 files, parses
  scikit-learn's digits and pairs them, once, before `fit` starts. Two states of the on-disk
  feature cache: "cold" (an empty cache directory: every wav is decoded, and the cache file
  is written in a background thread) and "disk-cached" (a new process reading the cache the
  cold run wrote; what every later process sees). "in-memory" is the second epoch of the
  same process. Each is the median of ``--repeats`` processes (min-max in brackets);

each loader with 1 and 2 workers (threads of Keras' PyDataset enqueuer, the path `fit` takes).
The training rate is ``train_on_batch`` on random batches of the loader's shapes, timed in
windows after warm-up (for AV-Digits one window after each pair of loader processes, as the
machine's speed drifts); the verdict compares the loader with the *fastest* window (the most
training could consume). The target is loader rate >= 3x training
rate, so training is never input-bound. Other jobs may share the CPU cores: run it with
``nice`` and compare numbers of the same run.

    KERAS_BACKEND=jax nice -n 10 python benchmarks/data_throughput.py [--clips 48]
        [--batch-size 16] [--repeats 3] [--only av_digits]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import keras  # noqa: E402
from keras.src.trainers.data_adapters.py_dataset_adapter import PyDatasetAdapter  # noqa: E402

import zoo  # noqa: E402
from tests import dataset_fixtures  # noqa: E402

FSDD_ROOT = REPO.parent / "shared" / "data" / "fsdd"


def loader_rate(dataset, max_batches: int) -> float:
    """Samples/s of one pass over up to ``max_batches`` batches, as `fit` iterates them."""
    adapter = PyDatasetAdapter(dataset, shuffle=False)
    adapter.on_epoch_begin()
    start, samples = time.perf_counter(), 0
    for i, (_inputs, y) in enumerate(adapter.get_numpy_iterator()):
        samples += len(y)
        if i + 1 >= max_batches:
            break
    elapsed = time.perf_counter() - start
    adapter.on_epoch_end()
    return samples / elapsed


class TrainingRate:
    """``train_on_batch`` samples/s of a zoo model on random batches of the loader's shapes.

    Built and warmed up once; `window` times one window of ``steps`` steps, so windows can be
    interleaved with the loader measurements (the machine's speed drifts over minutes), and
    `summary` gives (median, fastest) over every window.
    """

    def __init__(self, model_name: str, input_shapes, num_classes: int, batch_size: int):
        self.model = zoo.models.create(model_name, num_classes=num_classes)
        self.model.compile(
            optimizer=keras.optimizers.SGD(1e-3, momentum=0.9),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        rng = np.random.default_rng(0)
        self.x = {
            m: rng.standard_normal((batch_size, *s)).astype(np.float32)
            for m, s in input_shapes.items()
        }
        self.y = rng.integers(0, num_classes, batch_size).astype(np.int32)
        self.batch_size = batch_size
        self.rates: list[float] = []
        for _ in range(3):  # compile / warm up
            self.model.train_on_batch(self.x, self.y)

    def window(self, steps: int) -> None:
        start = time.perf_counter()
        for _ in range(steps):
            self.model.train_on_batch(self.x, self.y)
        self.rates.append(steps * self.batch_size / (time.perf_counter() - start))

    def summary(self) -> tuple[float, float]:
        return float(np.median(self.rates)), float(np.max(self.rates))


def report(name: str, rates: dict[int, float], train: tuple[float, float], note=None) -> None:
    median, fastest = train
    for workers, rate in rates.items():
        verdict = "OK" if rate >= 3 * fastest else "INPUT-BOUND RISK"
        spread = f" [{note[workers]}]" if note else ""
        print(
            f"{name:26s} workers={workers}: loader {rate:9.1f} samples/s{spread} | training "
            f"{median:7.1f} (fastest {fastest:7.1f}) samples/s | ratio {rate / fastest:6.1f}x"
            f"  {verdict}"
        )


def fresh_process_epoch(fsdd_root: str, workers: int, cache_dir: str) -> dict:
    """Runs `_child_epoch` in a new Python process; returns its timings."""
    command = [
        sys.executable,
        __file__,
        "--child-epoch",
        json.dumps({"root": fsdd_root, "workers": workers, "cache_dir": cache_dir}),
    ]
    done = subprocess.run(command, check=True, capture_output=True, text=True, cwd=REPO)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _child_epoch(spec: dict) -> None:
    """In a fresh process: load AV-Digits/train and iterate two epochs, timing each."""
    # imports once per process, outside the clock (as keras' own import is)
    import librosa.filters  # noqa: F401
    import scipy.fft  # noqa: F401
    import scipy.sparse  # noqa: F401
    import sklearn.datasets  # noqa: F401
    import soundfile  # noqa: F401

    start = time.perf_counter()
    dataset = zoo.datasets.load(
        "av_digits",
        spec["root"],
        "train",
        batch_size=64,
        workers=spec["workers"],
        seed=spec["workers"],
        feature_cache=spec["cache_dir"],
    )
    loaded = time.perf_counter()
    first_seconds = dataset.num_examples / loader_rate(dataset, len(dataset))
    result = {
        "examples": dataset.num_examples,
        "load_s": loaded - start,
        "epoch_s": first_seconds,
        "delivered_rate": dataset.num_examples / first_seconds,
        "with_setup_rate": dataset.num_examples / (loaded - start + first_seconds),
        "in_memory_rate": loader_rate(dataset, len(dataset)),
    }
    print(json.dumps(result))


def spread(values: list[float]) -> tuple[float, str]:
    return float(np.median(values)), f"{min(values):.0f}-{max(values):.0f}"


def av_digits_benchmark(args) -> None:
    if not (Path(args.fsdd_root) / "recordings").is_dir():
        print(f"AV-Digits skipped: no FSDD recordings at {args.fsdd_root}")
        return
    shapes = {"audio": (40, 40, 1), "visual": (28, 28, 1)}
    training = TrainingRate("late_fusion_av_cnn", shapes, 10, 64)
    runs: dict[str, dict[int, list[dict]]] = {"cold": {}, "disk": {}}
    for workers in (1, 2):
        for state in runs.values():
            state[workers] = []
        for _ in range(args.repeats):
            with tempfile.TemporaryDirectory() as cache_dir:  # never the user's cache
                runs["cold"][workers].append(
                    fresh_process_epoch(args.fsdd_root, workers, cache_dir)
                )
                runs["disk"][workers].append(
                    fresh_process_epoch(args.fsdd_root, workers, cache_dir)
                )
            training.window(4 * args.train_steps)  # interleaved with the loader runs
    train = training.summary()
    examples = runs["cold"][1][0]["examples"]
    print(
        f"AV-Digits train split: {examples} clips, batch 64. First epoch = fresh process, "
        "imports excluded; delivered = epoch only, with setup = load() + epoch; median of "
        f"{args.repeats} processes [min-max]."
    )
    for label, key, state in (
        ("cold, delivered", "delivered_rate", "cold"),
        ("cold, with setup", "with_setup_rate", "cold"),
        ("disk-cached, delivered", "delivered_rate", "disk"),
        ("disk-cached, with setup", "with_setup_rate", "disk"),
        ("in-memory (epoch 2+)", "in_memory_rate", "disk"),
    ):
        rates, notes = {}, {}
        for workers, results in runs[state].items():
            rates[workers], notes[workers] = spread([r[key] for r in results])
        report(label, rates, train, notes)
    for state in ("cold", "disk"):
        for workers, results in runs[state].items():
            load = np.median([r["load_s"] for r in results]) * 1e3
            epoch = np.median([r["epoch_s"] for r in results]) * 1e3
            print(
                f"  ({state:4s}, workers={workers}: load {load:5.1f} ms + first epoch "
                f"{epoch:6.1f} ms)"
            )


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--child-epoch":
        _child_epoch(json.loads(sys.argv[2]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=48, help="synthetic CREMA-D train clips")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--train-steps", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3, help="processes / timed windows")
    parser.add_argument("--only", choices=("all", "cremad", "av_digits"), default="all")
    parser.add_argument("--fsdd-root", default=str(FSDD_ROOT))
    args = parser.parse_args()
    print(f"backend {keras.backend.backend()}, {os.cpu_count()} CPU cores")
    if args.only in ("all", "cremad"):
        cremad_benchmark(args)
    if args.only in ("all", "av_digits"):
        av_digits_benchmark(args)


def cremad_benchmark(args) -> None:
    with tempfile.TemporaryDirectory() as root:
        dataset_fixtures.write_cremad(
            root,
            train_per_class=max(1, args.clips // 6),
            test_per_class=1,
            frames_per_clip=3,
            seconds=2.5,
            frame_size=(480, 360),
        )
        rates = {}
        for workers in (1, 2):
            dataset = zoo.datasets.load(
                "cremad",
                root,
                "train",
                batch_size=args.batch_size,
                validation_fraction=0,
                workers=workers,
            )
            loader_rate(dataset, 1)  # warm caches (librosa filters, imports)
            rates[workers] = loader_rate(dataset, len(dataset))
        training = TrainingRate("cremad_late_resnet18", dataset.input_shapes, 6, args.batch_size)
        training.window(args.train_steps)
        report("CREMA-D", rates, training.summary())


if __name__ == "__main__":
    main()
