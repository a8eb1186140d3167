"""Soak: thousands of M-SAM steps through `fit` per backend; memory and step time over time.

    python benchmarks/soak.py --json benchmarks/results/soak_cpu.json      # all three backends
    python benchmarks/soak.py --backends jax --epochs 20                     # a quick look

Each backend runs in its own fresh process: ``late_fusion_av_cnn`` (the reference model of
`step_time.py`), `MSAM(rho=0.05)` with its per-step Shapley shares and the skip-non-finite
guard (the defaults), SGD(0.01, momentum 0.9), batch 64, 32 steps per epoch over 2,048 random
examples (reshuffled every epoch), ``--epochs`` epochs (default 100: 3,200 steps), plus the
per-modality validation accuracies (`keras_msam.callbacks.ModalityAccuracy` on 256 examples)
at every epoch end, as the experiment runner does.

At the end of every epoch the process's resident memory (``VmRSS`` of ``/proc/self/status``)
and the epoch's wall time are recorded. The first ``--warmup`` (5) epochs (tracing, compilation,
allocator growth) are left out; over the rest the script reports the RSS at the first and the
last measured epoch, the least-squares slope of RSS (MiB per 1,000 steps), and the median ms per
step of the first and the last fifth of the measured epochs (their ratio: > 1 is a slowdown).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

STEPS_PER_EPOCH = 32
BATCH = 64


def _rss_mib() -> float:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def _soak(epochs: int) -> dict[str, list[float]]:
    import keras
    from step_time import compile_with_reference_data  # this directory (sys.path[0])

    import keras_msam
    import zoo
    from keras_msam.callbacks import ModalityAccuracy

    keras.utils.set_random_seed(0)
    model = zoo.models.create("late_fusion_av_cnn", num_classes=10)
    trainer = keras_msam.MSAM(model, rho=0.05)
    x, y = compile_with_reference_data(trainer, STEPS_PER_EPOCH * BATCH)
    validation = ({k: v[:256] for k, v in x.items()}, y[:256])

    class Recorder(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.rss: list[float] = []
            self.seconds: list[float] = []

        def on_epoch_begin(self, epoch: int, logs: object = None) -> None:
            self._start = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: object = None) -> None:
            self.seconds.append(time.perf_counter() - self._start)
            self.rss.append(_rss_mib())

    recorder = Recorder()
    trainer.fit(
        x,
        y,
        batch_size=BATCH,
        epochs=epochs,
        verbose=0,
        shuffle=True,
        callbacks=[ModalityAccuracy(validation, prefix="val_"), recorder],
    )
    return {"rss_mib": recorder.rss, "epoch_seconds": recorder.seconds}


def summarise(record: dict[str, list[float]], warmup: int) -> dict[str, float]:
    """RSS first/last/slope and ms/step first/last fifth over the epochs after ``warmup``."""
    import numpy as np

    rss = np.asarray(record["rss_mib"][warmup:])
    ms = 1000.0 * np.asarray(record["epoch_seconds"][warmup:]) / STEPS_PER_EPOCH
    steps = np.arange(len(rss)) * STEPS_PER_EPOCH
    slope = float(np.polyfit(steps, rss, 1)[0]) * 1000.0 if len(rss) > 1 else float("nan")
    fifth = max(1, len(ms) // 5)
    first, last = float(np.median(ms[:fifth])), float(np.median(ms[-fifth:]))
    return {
        "steps": int((warmup + len(rss)) * STEPS_PER_EPOCH),
        "measured_steps": int(len(rss) * STEPS_PER_EPOCH),
        "rss_first_mib": float(rss[0]),
        "rss_last_mib": float(rss[-1]),
        "rss_max_mib": float(rss.max()),
        "rss_slope_mib_per_1000_steps": slope,
        "ms_per_step_first_fifth": first,
        "ms_per_step_last_fifth": last,
        "slowdown_last_over_first": last / first,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backends", default="jax,tensorflow,torch")
    parser.add_argument("--epochs", type=int, default=100, help="epochs of 32 steps")
    parser.add_argument("--warmup", type=int, default=5, help="epochs left out of the figures")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print("RESULT " + json.dumps(_soak(args.epochs)), flush=True)
        return
    table: dict[str, dict[str, float]] = {}
    raw: dict[str, dict[str, list[float]]] = {}
    for backend in args.backends.split(","):
        command = [sys.executable, os.path.abspath(__file__), "--child"]
        command += ["--epochs", str(args.epochs)]
        env = {**os.environ, "KERAS_BACKEND": backend}
        out = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        line = next((ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if line is None:
            print(f"{backend}: failed\n{out.stderr[-3000:]}", file=sys.stderr)
            continue
        raw[backend] = json.loads(line[len("RESULT ") :])
        table[backend] = summarise(raw[backend], args.warmup)
        row = table[backend]
        print(
            f"{backend:10s} {row['steps']} steps: RSS {row['rss_first_mib']:.0f} -> "
            f"{row['rss_last_mib']:.0f} MiB (max {row['rss_max_mib']:.0f}, slope "
            f"{row['rss_slope_mib_per_1000_steps']:+.2f} MiB/1000 steps); ms/step first fifth "
            f"{row['ms_per_step_first_fifth']:.2f}, last fifth {row['ms_per_step_last_fifth']:.2f}"
            f" (x{row['slowdown_last_over_first']:.2f})",
            flush=True,
        )
    if args.json:
        os.makedirs(os.path.dirname(args.json) or ".", exist_ok=True)
        with open(args.json, "w") as handle:
            json.dump({"summary": table, "per_epoch": raw, "epochs": args.epochs}, handle)
    if table:
        median = statistics.median(r["slowdown_last_over_first"] for r in table.values())
        print(f"median slowdown (last fifth / first fifth): x{median:.2f}")


if __name__ == "__main__":
    main()
