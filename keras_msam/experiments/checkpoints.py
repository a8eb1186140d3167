"""What a run writes while it trains, each file written atomically, and how it is read back.

Every file of a run directory is written to a temporary name in the same directory and renamed
over its final name (`os.replace`, atomic on POSIX and Windows), so a process killed at any
instant leaves either the previous complete file or the new complete file, never a torn one.
The epoch backup is one unit: its weights file carries the epoch in its name and ``state.json``
(written last) names it, so weights and epoch always agree.

A file that is unreadable all the same (truncated or edited by hand, a disk error) is never
trusted: `read_run_json` raises `CorruptRunFile` naming it, and the runner then recomputes that
one run from scratch (see `keras_msam.experiments.runner.train_run`).
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

import keras

from keras_msam.experiments.config import ConfigError
from keras_msam.experiments.results import atomic_path, to_float, write_csv, write_json


class CorruptRunFile(RuntimeError):
    """A run's checkpoint or state file exists but cannot be read back."""

    def __init__(self, path: str, reason: object) -> None:
        super().__init__(f"{path} is unreadable ({reason})")
        self.path = path


def save_weights_atomic(model: keras.Model, path: str) -> None:
    """``model.save_weights(path)`` through a temporary file and a rename (`atomic_path`)."""
    with atomic_path(path) as temporary:
        model.save_weights(temporary, overwrite=True)


def save_model_atomic(model: keras.Model, path: str) -> None:
    """``model.save(path)`` (``.keras``) through a temporary file and a rename (`atomic_path`)."""
    with atomic_path(path) as temporary:
        model.save(temporary)


def read_run_json(path: str, default: Any = None) -> Any:
    """The JSON at ``path``; ``default`` when there is none; `CorruptRunFile` when unreadable."""
    if not os.path.exists(path):
        return default
    try:
        with open(path) as handle:
            return json.load(handle)
    except (OSError, ValueError) as error:
        raise CorruptRunFile(path, error) from error


def load_weights_checked(model: keras.Model, path: str) -> None:
    """``model.load_weights(path)``, a failure raised as `CorruptRunFile` naming the file."""
    try:
        model.load_weights(path)
    except Exception as error:  # h5py's OSError, Keras's ValueError on a mismatched file, ...
        raise CorruptRunFile(path, error) from error


class AtomicBackupAndRestore(keras.callbacks.BackupAndRestore):
    """`keras.callbacks.BackupAndRestore` whose backup survives a kill at any instant.

    Keras's callback writes ``latest.weights.h5`` in place and then the epoch number: a kill
    in between leaves weights of one epoch labelled with another, and training resumes from a
    wrong state without a word. Here each epoch's weights go to ``epoch<k>.weights.h5``
    (temporary file + rename), then ``state.json`` names that file and epoch (temporary file +
    rename), then the older weights are removed. An unreadable backup raises `CorruptRunFile`.
    The backup is kept after training (removed by the runner once the run's results are
    written), so a kill during the final evaluation costs no epoch.
    """

    def __init__(self, backup_dir: str) -> None:
        super().__init__(backup_dir, save_freq="epoch", delete_checkpoint=False)
        self._state_path = os.path.join(backup_dir, "state.json")

    def on_train_begin(self, logs: Any = None) -> None:
        state = read_run_json(self._state_path)
        if state is None:
            return
        try:
            epoch, name = int(state["epoch"]), str(state["weights"])
        except (KeyError, TypeError, ValueError) as error:
            raise CorruptRunFile(self._state_path, f"no epoch/weights entry: {error}") from error
        model = self.model
        if model.optimizer is not None and not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        load_weights_checked(model, os.path.join(self.backup_dir, name))
        model._initial_epoch = epoch  # how BackupAndRestore tells fit where to start

    def _save_model(self) -> None:
        os.makedirs(self.backup_dir, exist_ok=True)
        name = f"epoch{self._current_epoch}.weights.h5"
        save_weights_atomic(self.model, os.path.join(self.backup_dir, name))
        write_json(self._state_path, {"epoch": self._current_epoch, "weights": name})
        for other in os.listdir(self.backup_dir):
            if other.endswith(".weights.h5") and other != name:
                os.remove(os.path.join(self.backup_dir, other))


class BestCheckpoint(keras.callbacks.Callback):
    """Saves the weights of the best epoch by a validation metric; the best value survives a
    restart (kept in ``best.json``, written after the weights), unlike `ModelCheckpoint`'s."""

    def __init__(self, directory: str, monitor: str) -> None:
        super().__init__()
        self.monitor = monitor
        self.weights_path = os.path.join(directory, "best.weights.h5")
        self.state_path = os.path.join(directory, "best.json")
        self.maximise = not monitor.endswith("loss")
        self.best = read_run_json(self.state_path, {"epoch": -1, "value": None})
        if self.best.get("epoch", -1) >= 0 and not os.path.exists(self.weights_path):
            raise CorruptRunFile(self.weights_path, "named by best.json but missing")

    def _better(self, value: float) -> bool:
        if self.best["value"] is None:
            return True
        return value > self.best["value"] if self.maximise else value < self.best["value"]

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs = logs or {}
        if self.monitor not in logs:
            raise ConfigError(
                f"select_metric {self.monitor!r} is not in the epoch logs; available: "
                f"{', '.join(sorted(k for k in logs if k.startswith('val_')))}."
            )
        value = float(logs[self.monitor])
        if math.isfinite(value) and self._better(value):
            save_weights_atomic(self.model, self.weights_path)
            self.best = {"epoch": epoch, "value": value}
            write_json(self.state_path, self.best)


class HistoryWriter(keras.callbacks.Callback):
    """Writes the epoch logs to history.csv/json after every epoch, keeping the rows of earlier
    (resumed-from) processes; a re-run epoch replaces its row."""

    def __init__(self, directory: str) -> None:
        super().__init__()
        self.csv_path = os.path.join(directory, "history.csv")
        self.json_path = os.path.join(directory, "history.json")
        self.rows: list[dict[str, Any]] = read_run_json(self.json_path, [])

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        row = {"epoch": epoch}
        row.update({k: to_float(v) for k, v in (logs or {}).items()})
        self.rows = [r for r in self.rows if r["epoch"] < epoch] + [row]
        write_json(self.json_path, self.rows)
        write_csv(self.csv_path, self.rows)

    def series(self) -> dict[str, list[float]]:
        """``{log name: per-epoch values}`` over all epochs so far."""
        keys = sorted({k for r in self.rows for k in r if k != "epoch"})
        return {k: [r.get(k, float("nan")) for r in self.rows] for k in keys}
