"""Cost of an M-SAM step as the number of modalities grows: M = 2, 3, 4, 6, 8.

Synthetic inputs, one (28, 28, 1) image per modality; each modality has the reference encoder
(Conv(16,3,s2) → Conv(32,3,s2) → GAP → Dense(64)); concat → Dense(10); batch 64; SGD. Exact
Shapley up to the threshold (6 modalities), permutation-sampled above (16 permutations). Rows:
plain Joint (no Shapley logging), M-SAM with coalitions on encoder features (the default for
zoo models) and M-SAM with coalitions formed by zeroing inputs. Cost is relative to M = 2.

    KERAS_BACKEND=jax python benchmarks/modality_scaling.py [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import keras
import numpy as np

import keras_msam
from zoo.models.base import MultimodalClassifier
from zoo.models.encoders import conv_encoder
from zoo.models.fusions import late_fusion

COUNTS = (2, 3, 4, 6, 8)
VARIANTS = ("joint (no log)", "msam (features)", "msam (inputs)")


def build(count: int) -> keras.Model:
    names = [f"m{i}" for i in range(count)]
    encoders = {name: conv_encoder(name, (28, 28, 1)) for name in names}
    return MultimodalClassifier(encoders, late_fusion("concat", 10), name=f"m{count}")


def measure(count: int, variant: str, steps: int, epochs: int, batch: int) -> float:
    keras.utils.set_random_seed(0)
    model = build(count)
    trainer = {
        "joint (no log)": lambda: keras_msam.Joint(model, log_shapley=False),
        "msam (features)": lambda: keras_msam.MSAM(model, coalitions="features"),
        "msam (inputs)": lambda: keras_msam.MSAM(model, coalitions="inputs"),
    }[variant]()
    trainer.compile(
        optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    rng = np.random.default_rng(0)
    x = {
        name: rng.standard_normal((steps * batch, 28, 28, 1)).astype("float32")
        for name in model.modality_names
    }
    y = rng.integers(0, 10, size=steps * batch)
    seconds = []
    timer = keras.callbacks.LambdaCallback(
        on_epoch_begin=lambda e, logs: seconds.append(-time.perf_counter()),
        on_epoch_end=lambda e, logs: seconds.__setitem__(-1, seconds[-1] + time.perf_counter()),
    )
    trainer.fit(
        x, y, batch_size=batch, epochs=epochs + 1, shuffle=False, verbose=0, callbacks=[timer]
    )
    return 1000.0 * statistics.median(seconds[1:]) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--json", default=None)
    parser.add_argument("--counts", default=",".join(map(str, COUNTS)), help="e.g. 2,8")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    args = parser.parse_args()
    counts = [int(c) for c in args.counts.split(",")]
    variants = args.variants.split(",")
    table = {
        v: {m: measure(m, v, args.steps, args.epochs, args.batch) for m in counts} for v in variants
    }
    base = counts[0]
    print(
        f"backend {keras.backend.backend()}: ms/step (relative to M = {base}), batch {args.batch}"
    )
    print(f"{'variant':<18}" + "".join(f"{'M=' + str(m):>16}" for m in counts))
    for variant, row in table.items():
        cells = "".join(f"{row[m]:>8.1f} ({row[m] / row[counts[0]]:>4.1f}x)" for m in counts)
        print(f"{variant:<18}{cells}")
    if "joint (no log)" in table and "msam (features)" in table:
        for m in counts:
            ratio = table["msam (features)"][m] / table["joint (no log)"][m]
            print(f"M = {m}: M-SAM (features) / Joint (no log) = {ratio:.2f}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(
                {"backend": keras.backend.backend(), "batch": args.batch, "ms_per_step": table},
                handle,
                indent=2,
            )


if __name__ == "__main__":
    main()
