"""Loader throughput against the training-step rate of the matching zoo model.

Measures, in samples per second on this machine and the current KERAS_BACKEND:

* the CREMA-D loader (OGM-GE format: wav decode + resample to 22,050 Hz + STFT, jpg decode +
  resize to 224 + ImageNet normalisation) on a synthetic data set written in the exact layout
  (2.5 s, 16 kHz wavs and 480x360 jpgs, like the real CREMA-D), against ``cremad_late_resnet18``;
* the AV-Digits loader on the real FSDD recordings (``../shared/data/fsdd``), against
  ``late_fusion_av_cnn``, in its first epoch (wav decode + log-mel) and once cached;

each loader with 1 and 2 workers (threads of Keras' PyDataset enqueuer, the path `fit` takes).
The target is loader rate >= 3x training rate, so training is never input-bound.

    KERAS_BACKEND=jax python benchmarks/data_throughput.py [--clips 48] [--batch-size 16]
"""

from __future__ import annotations

import argparse
import os
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


def training_rate(model_name: str, input_shapes, num_classes: int, batch_size: int, steps: int):
    """Samples/s of ``train_on_batch`` of a zoo model on random batches of the loader's shapes."""
    model = zoo.models.create(model_name, num_classes=num_classes)
    model.compile(
        optimizer=keras.optimizers.SGD(1e-3, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    rng = np.random.default_rng(0)
    x = {
        m: rng.standard_normal((batch_size, *s)).astype(np.float32) for m, s in input_shapes.items()
    }
    y = rng.integers(0, num_classes, batch_size).astype(np.int32)
    for _ in range(2):  # compile / warm up
        model.train_on_batch(x, y)
    start = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(x, y)
    return steps * batch_size / (time.perf_counter() - start)


def report(name: str, rates: dict[int, float], train: float) -> None:
    for workers, rate in rates.items():
        verdict = "OK" if rate >= 3 * train else "INPUT-BOUND RISK"
        print(
            f"{name:10s} workers={workers}: loader {rate:8.1f} samples/s | training "
            f"{train:8.1f} samples/s | ratio {rate / train:6.1f}x  {verdict}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=48, help="synthetic CREMA-D train clips")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--train-steps", type=int, default=5)
    parser.add_argument("--fsdd-root", default=str(FSDD_ROOT))
    args = parser.parse_args()
    print(f"backend {keras.backend.backend()}, {os.cpu_count()} CPU cores")

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
        train = training_rate(
            "cremad_late_resnet18",
            dataset.input_shapes,
            6,
            args.batch_size,
            args.train_steps,
        )
        report("CREMA-D", rates, train)

    if not (Path(args.fsdd_root) / "recordings").is_dir():
        print(f"AV-Digits skipped: no FSDD recordings at {args.fsdd_root}")
        return
    rates, cached = {}, {}
    for workers in (1, 2):
        dataset = zoo.datasets.load(
            "av_digits", args.fsdd_root, "train", batch_size=64, workers=workers, seed=workers
        )
        rates[workers] = loader_rate(dataset, len(dataset))  # first epoch: wav + log-mel
        cached[workers] = loader_rate(dataset, len(dataset))  # later epochs: cached features
    train = training_rate("late_fusion_av_cnn", dataset.input_shapes, 10, 64, 4 * args.train_steps)
    report("AV-Digits", rates, train)
    report("(cached)", cached, train)


if __name__ == "__main__":
    main()
