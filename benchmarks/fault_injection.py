"""Fault injection: `keras-msam compare` killed with SIGKILL at random points, then resumed.

    python benchmarks/fault_injection.py --trials 10 --kills 6 \\
        --json benchmarks/results/fault_injection_jax.json    # KERAS_BACKEND picks the backend

Each trial runs one small experiment (embedded data, ``joint`` and ``msam``, 2 seeds, 3 epochs:
4 runs of 12 steps) in a fresh run directory as a sequence of processes. Every process but the
last is killed with SIGKILL by itself at a point drawn at random (seeded by the trial):

- ``batch``: after the k-th training batch (during an epoch);
- ``validation``: at the k-th epoch-end validation pass (per-modality accuracies in progress);
- ``checkpoint``: right after the k-th weights file is written, with that file cut to half its
  size first (a torn write: the kill lands while a checkpoint is being written);
- ``rename``: at the k-th atomic rename of any run file (weights, JSON, CSV), with the file about
  to be renamed cut to half its size (a kill while a result file is being written);
- ``between_runs``: after the k-th finished run's results are written (between runs).

The last process runs to the end. The trial passes when its results (every run's accuracies,
per-modality accuracies, best epoch and value, Shapley shares, train accuracy, sharpness) equal
those of one uninterrupted run of the same experiment. The script prints one line per trial
and a summary, and exits 1 if any trial differs. ``tests/test_fault_injection.py`` runs it with
a few kills on every backend.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any

KILL_POINTS = {  # point: the largest k drawn (kills land within the remaining work)
    "batch": 20,
    "validation": 5,
    "checkpoint": 10,
    "rename": 40,
    "between_runs": 2,
}
EXPERIMENT = [
    "compare", "--methods", "joint,msam", "--seeds", "2", "--epochs", "3",
    "--num-train", "128", "--batch-size", "32", "--no-plots", "--quiet",
]  # fmt: skip
COMPARED = (
    "accuracy", "modality_accuracy", "best_epoch", "best_value", "mean_shares",
    "train_accuracy", "sharpness", "epochs",
)  # fmt: skip


# --------------------------------------------------------------------------- the child process
def _die(path: str | None = None) -> None:
    if path is not None and os.path.isfile(path):
        size = os.path.getsize(path)
        with open(path, "r+b") as handle:
            handle.truncate(size // 2)
    os.kill(os.getpid(), signal.SIGKILL)


def _install_kill(point: str, count: int) -> None:
    """Patches the one place where this process kills itself at the ``count``-th event."""
    import keras

    import keras_msam.callbacks as callbacks
    from keras_msam.experiments import runner

    seen = {"n": 0}

    def hit() -> bool:
        seen["n"] += 1
        return seen["n"] == count

    if point == "batch":
        original_batch = callbacks.StepTimer.on_train_batch_end

        def on_batch(self: Any, batch: int, logs: Any = None) -> None:
            original_batch(self, batch, logs)
            if hit():
                _die()

        callbacks.StepTimer.on_train_batch_end = on_batch
    elif point == "validation":
        original_epoch = callbacks.ModalityAccuracy.on_epoch_end

        def on_epoch(self: Any, epoch: int, logs: Any = None) -> None:
            if hit():
                _die()
            original_epoch(self, epoch, logs)

        callbacks.ModalityAccuracy.on_epoch_end = on_epoch
    elif point == "checkpoint":
        original_save = keras.Model.save_weights

        def save_weights(self: Any, filepath: str, *args: Any, **kwargs: Any) -> None:
            original_save(self, filepath, *args, **kwargs)
            if hit():
                _die(str(filepath))

        keras.Model.save_weights = save_weights
    elif point == "rename":
        original_replace = os.replace

        def replace(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
            if hit():
                _die(str(src))
            original_replace(src, dst, *args, **kwargs)

        os.replace = replace
    elif point == "between_runs":
        original_write = runner.write_results

        def write_results(*args: Any, **kwargs: Any) -> Any:
            out = original_write(*args, **kwargs)
            if not kwargs.get("final") and hit():
                _die()
            return out

        runner.write_results = write_results
    else:
        raise ValueError(f"unknown kill point {point!r}; expected one of {sorted(KILL_POINTS)}")


def child(run_dir: str, point: str, count: int) -> int:
    """One process of a trial: ``compare`` into ``run_dir``, killed at (point, count)."""
    if point != "none":
        _install_kill(point, count)
    from keras_msam.cli.main import main

    return main([*EXPERIMENT, "--run-dir", run_dir]) or 0


# --------------------------------------------------------------------------- the parent
def _launch(run_dir: str, point: str = "none", count: int = 0) -> int:
    command = [sys.executable, os.path.abspath(__file__), "--child", run_dir, point, str(count)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    if done.returncode not in (0, -signal.SIGKILL):
        sys.stderr.write(done.stdout[-3000:] + done.stderr[-3000:])
    return done.returncode


def results(run_dir: str) -> dict[tuple[str, int], dict[str, Any]]:
    """``{(method, seed): the compared fields}`` of a finished run directory."""
    runs = {}
    for method_dir in sorted(os.listdir(run_dir)):
        for seed_dir in sorted(os.listdir(os.path.join(run_dir, method_dir)) if os.path.isdir(
            os.path.join(run_dir, method_dir)) else []):  # fmt: skip
            path = os.path.join(run_dir, method_dir, seed_dir, "metrics.json")
            if os.path.exists(path):
                with open(path) as handle:
                    record = json.load(handle)
                runs[record["method"], record["seed"]] = {k: record[k] for k in COMPARED}
    return runs


def _close(a: Any, b: Any, tolerance: float) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k], tolerance) for k in a)
    a, b = float(a), float(b)
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return abs(a - b) <= tolerance * max(1.0, abs(b))


def differences(
    got: dict[tuple[str, int], dict[str, Any]],
    want: dict[tuple[str, int], dict[str, Any]],
    tolerance: float = 1e-5,
) -> list[str]:
    """Human-readable differences between two `results` (empty when they agree)."""
    if got.keys() != want.keys():
        return [f"runs {sorted(got)} != {sorted(want)}"]
    return [
        f"{key} {field}: {got[key][field]} != {want[key][field]}"
        for key in want
        for field in COMPARED
        if not _close(got[key][field], want[key][field], tolerance)
    ]


def trial(
    directory: str, seed: int, kills: int, reference: dict[tuple[str, int], dict[str, Any]]
) -> dict[str, Any]:
    """One trial: up to ``kills`` killed processes, then one to the end; compared with
    ``reference``."""
    rng = random.Random(seed)
    run_dir = os.path.join(directory, f"trial{seed}")
    survived: list[str] = []
    for _ in range(kills):
        point = rng.choice(sorted(KILL_POINTS))
        count = rng.randint(1, KILL_POINTS[point])
        code = _launch(run_dir, point, count)
        if code == 0:  # the work left ended before the kill point
            break
        if code != -signal.SIGKILL:
            return {"trial": seed, "kills": survived, "ok": False, "error": f"exit {code}"}
        survived.append(f"{point}@{count}")
    code = _launch(run_dir)
    if code != 0:
        return {"trial": seed, "kills": survived, "ok": False, "error": f"resume exit {code}"}
    diff = differences(results(run_dir), reference)
    return {"trial": seed, "kills": survived, "ok": not diff, "differences": diff[:5]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--kills", type=int, default=6, help="killed processes per trial (max)")
    parser.add_argument("--first-trial", type=int, default=0)
    parser.add_argument("--directory", default=None, help="work directory (default: a temp dir)")
    parser.add_argument("--json", default=None, help="write the trials here")
    parser.add_argument("--child", nargs=3, metavar=("RUN_DIR", "POINT", "COUNT"))
    args = parser.parse_args(argv)
    if args.child:
        return child(args.child[0], args.child[1], int(args.child[2]))

    directory = args.directory or tempfile.mkdtemp(prefix="keras-msam-faults-")
    backend = os.environ.get("KERAS_BACKEND", "default")
    start = time.time()
    if _launch(os.path.join(directory, "uninterrupted")) != 0:
        print("the uninterrupted run failed")
        return 1
    reference = results(os.path.join(directory, "uninterrupted"))
    rows = []
    for number in range(args.first_trial, args.first_trial + args.trials):
        row = trial(directory, number, args.kills, reference)
        rows.append(row)
        print(f"trial {number}: {'same results' if row['ok'] else 'DIFFERENT'} after "
              f"{len(row['kills'])} kills ({', '.join(row['kills']) or 'none'})"
              f"{'' if row['ok'] else ': ' + str(row.get('differences') or row.get('error'))}",
              flush=True)  # fmt: skip
    kills = sum(len(r["kills"]) for r in rows)
    passed = sum(r["ok"] for r in rows)
    summary = {
        "backend": backend,
        "trials": len(rows),
        "trials_with_same_results": passed,
        "kills_survived": kills if passed == len(rows) else None,
        "kills": kills,
        "seconds": round(time.time() - start, 1),
        "rows": rows,
    }
    print(f"{backend}: {passed}/{len(rows)} trials gave the uninterrupted results after "
          f"{kills} SIGKILLs ({summary['seconds']} s)")  # fmt: skip
    if args.json:
        os.makedirs(os.path.dirname(args.json) or ".", exist_ok=True)
        with open(args.json, "w") as handle:
            json.dump(summary, handle, indent=2)
    return 0 if passed == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
