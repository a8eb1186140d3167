"""Callbacks for multimodal training: per-modality validation accuracy, step timing.

`ModalityAccuracy` puts each modality's validation accuracy into the epoch logs, so the standard
`keras.callbacks.TensorBoard`, `CSVLogger` and `History` record it with the trainers' own
per-step scalars (``shapley_<modality>``, ``dominant``, ``sharpness``)::

    trainer.fit(
        x, y, validation_data=(x_val, y_val),
        callbacks=[
            keras_msam.callbacks.ModalityAccuracy((x_val, y_val)),  # before the loggers
            keras.callbacks.TensorBoard("logs"),
        ],
    )
"""

from __future__ import annotations

import time
from typing import Any

import keras
import numpy as np

from keras_msam.absence import map_leaves
from keras_msam.evaluation import modality_accuracies


class ModalityAccuracy(keras.callbacks.Callback):
    """At each epoch end, adds ``{prefix}accuracy_<modality>`` (that modality alone, the others
    zeroed) and ``{prefix}accuracy_multimodal`` to the logs.

    List it before the callbacks that record logs (TensorBoard, CSVLogger): Keras passes the same
    logs dict to the callbacks in order.

    Args:
        data: ``(x, y)`` with ``x`` a ``{modality: array}`` dict, or a data set with a
            ``to_numpy()`` method (the zoo's loaders).
        prefix: Prepended to the log names (default ``"val_"``).
        batch_size: Examples per forward (each stacks M + 1 coalitions).
    """

    def __init__(self, data: Any, prefix: str = "val_", batch_size: int = 256) -> None:
        super().__init__()
        if hasattr(data, "to_numpy"):
            data = data.to_numpy()
        try:
            x, y = data
        except (TypeError, ValueError):
            raise ValueError(
                "ModalityAccuracy needs data as (x, y) with x a {modality: array} dict, or a "
                f"zoo data set; got {type(data).__name__}."
            ) from None
        if not isinstance(x, dict) or not x:
            raise ValueError(
                f"ModalityAccuracy needs x as a non-empty {{modality: array}} dict, got "
                f"{type(x).__name__}."
            )
        self._x = map_leaves(np.asarray, x)
        self._y = np.asarray(y)
        self.prefix = prefix
        self.batch_size = int(batch_size)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if logs is None:
            return
        accuracies = modality_accuracies(self.model, self._x, self._y, self.batch_size)
        for name, value in accuracies.items():
            logs[f"{self.prefix}accuracy_{name}"] = value


class StepTimer(keras.callbacks.Callback):
    """Wall time of every training batch, host side (``median_ms`` skips compile-heavy ones)."""

    def __init__(self) -> None:
        super().__init__()
        self.durations: list[float] = []
        self._start = 0.0

    def on_train_batch_begin(self, batch: int, logs: Any = None) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        self.durations.append(time.perf_counter() - self._start)

    def median_ms(self, skip: int = 0) -> float:
        """Median ms per step after the first ``skip`` steps (all of them if too few)."""
        steady = self.durations[skip:] or self.durations
        return 1000.0 * float(np.median(steady)) if steady else float("nan")
