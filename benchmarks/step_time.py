"""ms per training step of Joint, SAM and M-SAM per backend, and the ratio to Joint.

Reference model (issue #2): inputs ``audio`` (40, 40, 1) and ``visual`` (28, 28, 1); each encoder
Conv2D(16, 3, stride 2, relu) → Conv2D(32, 3, stride 2, relu) → GlobalAveragePooling2D →
Dense(64, relu); concatenate → Dense(10); batch 64; SGD. This is `zoo` model
``late_fusion_av_cnn``. Steps run through `fit` (the path users take); each epoch is timed and
the first one (tracing/compilation) is dropped; the figure is the median ms/step over the rest.

    python benchmarks/step_time.py                       # all three backends, one process each
    python benchmarks/step_time.py --backends jax --epochs 8 --json out.json

Rows: ``keras fit`` is the plain `model.fit` of the same model (no wrapper), ``joint (no log)``
is `Joint(log_shapley=False)`, and ``joint``, ``sam``, ``msam`` are the trainers with their
default per-step Shapley logging (M-SAM needs the Shapley shares anyway), with coalitions formed on
encoder features (the default for zoo models); ``joint (inputs)`` and ``msam (inputs)`` form them
by zeroing inputs;
``msam (k=5)`` is amortised M-SAM (``shapley_every=5, sam_every=5``). Opt-in rows (``--variants``)
for the amortisation variants of issue 14: ``msam (sam_every=5)`` and ``msam (shapley_every=5)``
(one half amortised).

    python benchmarks/step_time.py --variants "joint,msam,msam (k=5),msam (sam_every=5)"
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

VARIANTS = (
    "keras fit",
    "joint (no log)",
    "joint",
    "joint (inputs)",
    "sam",
    "msam",
    "msam (inputs)",
    "msam (k=5)",
)
OPT_IN_VARIANTS = ("msam (sam_every=5)", "msam (shapley_every=5)")


def compile_with_reference_data(trainer, count: int):
    """Compiles ``trainer`` as every step benchmark does (SGD 0.01, momentum 0.9, sparse CE on
    logits, accuracy) and returns ``count`` random reference examples ``(x, y)`` (seed 0)."""
    import keras
    import numpy as np

    trainer.compile(
        optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    rng = np.random.default_rng(0)
    x = {
        "audio": rng.standard_normal((count, 40, 40, 1)).astype("float32"),
        "visual": rng.standard_normal((count, 28, 28, 1)).astype("float32"),
    }
    return x, rng.integers(0, 10, size=count).astype("int32")


def _measure(variant: str, epochs: int, steps: int, batch: int) -> float:
    import keras
    import numpy as np

    import keras_msam
    import zoo

    keras.utils.set_random_seed(0)
    model = zoo.models.create("late_fusion_av_cnn", num_classes=10)
    trainer = {
        "keras fit": lambda: model,
        "joint (no log)": lambda: keras_msam.Joint(model, log_shapley=False),
        "joint": lambda: keras_msam.Joint(model),
        "joint (inputs)": lambda: keras_msam.Joint(model, coalitions="inputs"),
        "sam": lambda: keras_msam.SAM(model, rho=0.05),
        "msam": lambda: keras_msam.MSAM(model, rho=0.05),
        "msam (inputs)": lambda: keras_msam.MSAM(model, rho=0.05, coalitions="inputs"),
        "msam (k=5)": lambda: keras_msam.MSAM(model, rho=0.05, shapley_every=5, sam_every=5),
        "msam (sam_every=5)": lambda: keras_msam.MSAM(model, rho=0.05, sam_every=5),
        "msam (shapley_every=5)": lambda: keras_msam.MSAM(model, rho=0.05, shapley_every=5),
    }[variant]()
    x, y = compile_with_reference_data(trainer, steps * batch)

    class EpochTimer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.seconds = []

        def on_epoch_begin(self, epoch, logs=None):
            self._start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds.append(time.perf_counter() - self._start)

    timer = EpochTimer()
    trainer.fit(
        x, y, batch_size=batch, epochs=epochs + 1, verbose=0, shuffle=False, callbacks=[timer]
    )
    return 1000.0 * float(np.median(timer.seconds[1:])) / steps


def _variants(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in VARIANTS + OPT_IN_VARIANTS]
    if unknown or not names:
        known = ", ".join(VARIANTS + OPT_IN_VARIANTS)
        raise SystemExit(f"--variants: unknown {unknown or 'empty list'}; known: {known}")
    return names


def _child(args: argparse.Namespace) -> None:
    variants = _variants(args.variants)
    results = {v: _measure(v, args.epochs, args.steps, args.batch) for v in variants}
    print("RESULT " + json.dumps(results), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backends", default="jax,tensorflow,torch")
    parser.add_argument("--epochs", type=int, default=6, help="timed epochs (after one warm-up)")
    parser.add_argument("--steps", type=int, default=30, help="steps per epoch")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="fresh processes per backend; the table shows the median run",
    )
    parser.add_argument(
        "--variants", default=",".join(VARIANTS), help="comma-separated rows (see the docstring)"
    )
    parser.add_argument("--json", default=None, help="also write the results to this file")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args)
        return
    variants = _variants(args.variants)
    table: dict[str, dict[str, float]] = {}
    runs: dict[str, list[dict[str, float]]] = {}
    for backend in args.backends.split(","):
        command = [sys.executable, __file__, "--child", "--epochs", str(args.epochs)]
        command += ["--steps", str(args.steps), "--batch", str(args.batch)]
        command += ["--variants", args.variants]
        env = {**os.environ, "KERAS_BACKEND": backend}
        runs[backend] = []
        for _ in range(args.repeats):
            out = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
            line = next((ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")), None)
            if line is None:
                print(f"{backend}: failed\n{out.stderr[-3000:]}", file=sys.stderr)
                break
            runs[backend].append(json.loads(line[len("RESULT ") :]))
        if runs[backend]:
            table[backend] = {v: statistics.median(r[v] for r in runs[backend]) for v in variants}
            print(f"measured {backend} ({len(runs[backend])} runs)", flush=True)
    print(
        f"\nms/step: median over {args.repeats} processes of each one's median over "
        f"{args.epochs} epochs x {args.steps} steps, batch {args.batch}"
    )
    ratios = {
        "msam/joint": ("msam", "joint"),
        "msam/joint (inputs)": ("msam (inputs)", "joint (inputs)"),
        "sam/joint": ("sam", "joint"),
        "msam/fit": ("msam", "keras fit"),
        "k=5/joint": ("msam (k=5)", "joint"),
        "sam_every=5/joint": ("msam (sam_every=5)", "joint"),
        "shapley_every=5/joint": ("msam (shapley_every=5)", "joint"),
    }
    ratios = {k: (a, b) for k, (a, b) in ratios.items() if a in variants and b in variants}
    widths = {v: max(15, len(v) + 2) for v in variants}
    print(f"{'backend':<11}" + "".join(f"{v:>{widths[v]}}" for v in variants))
    for backend, row in table.items():
        print(f"{backend:<11}" + "".join(f"{row[v]:>{widths[v]}.2f}" for v in variants))
    spans = {name: max(21, len(name) + 2) for name in ratios}
    print(f"\n{'ratio':<11}" + "".join(f"{name:>{spans[name]}}" for name in ratios))
    for backend, row in table.items():
        cells = "".join(f"{row[a] / row[b]:>{spans[n]}.2f}" for n, (a, b) in ratios.items())
        print(f"{backend:<11}{cells}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(
                {
                    "batch": args.batch,
                    "steps": args.steps,
                    "epochs": args.epochs,
                    "repeats": args.repeats,
                    "ms_per_step": table,
                    "runs": runs,
                },
                handle,
                indent=2,
            )


if __name__ == "__main__":
    main()
