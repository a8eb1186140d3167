"""What MSLR and MSES share: per-modality gradient factors set at epoch ends from validation data.

Both official baselines (``lihong2303/AGM@5a65542``, ``run/CREMAD_main.py``) scale each
modality's encoder gradients by a factor c_m inside the modulation epochs and change c_m only
after an epoch, from that modality's score alone on the evaluation data (MSLR: accuracy, MSES:
loss). This base holds the step (c_m on modality m's variables, shared variables untouched),
the ``fit`` that requires validation data and adds the epoch-end callback, and the reading of
validation data into arrays. A subclass gives the step's factors (`_step_factors`) and the
epoch-end rule (`end_of_epoch`).
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from keras_msam.data_sources import concatenate_batches
from keras_msam.trainers._balancing import (
    BalancingTrainer,
    check_window,
    split_off_validation,
)
from keras_msam.trainers.base import StepResult


class _EpochEnd(keras.callbacks.Callback):
    """Calls the trainer's ``end_of_epoch`` with the validation data after every epoch."""

    def __init__(self, trainer: EpochFactorTrainer, data: Any, batch_size: int | None) -> None:
        super().__init__()
        self._trainer = trainer
        self._data = data
        self._batch_size = batch_size

    def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
        self._trainer.begin_epoch()

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        self._trainer.end_of_epoch(self._data, self._batch_size)


class EpochFactorTrainer(BalancingTrainer):
    """Base of MSLR and MSES: encoder gradients scaled by per-modality factors.

    Args:
        model: A Keras model with dict inputs whose modalities own trainable variables.
        modulation_epochs: Inclusive ``(start, end)`` epochs (0-based) in which the factors
            apply; None scales in every epoch.
        **kwargs: See `MultimodalTrainer`.
    """

    #: The method's name in messages ("MSLR") and the prefix of its logs ("mslr").
    method = "EpochFactorTrainer"
    log_prefix = "factor"

    def __init__(
        self, model: keras.Model, modulation_epochs: tuple[int, int] | None = None, **kwargs: Any
    ) -> None:
        super().__init__(model, **kwargs)
        self.modulation_epochs = check_window(modulation_epochs, f"{self.method} modulation_epochs")
        if not any(self.structure.group_index(v) >= 0 for v in self.trainable_variables):
            raise ValueError(
                f"{self.method} scales each modality's encoder gradients; model "
                f"{self.model.name!r} has no modality-specific trainable variables."
            )
        self._extra_trackers = [
            self._mean_metric(f"{self.log_prefix}_factor_{n}") for n in self.modality_names
        ]

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "modulation_epochs": self.modulation_epochs}

    # ------------------------------------------------------------------ the step
    def _step_factors(self, non_trainable: list[Any]) -> Any:
        """(M,) float32 factors c_m of this step inside the modulation epochs; the base's are 1
        (the plain step), a method overrides them."""
        return ops.ones((len(self.modality_names),), dtype="float32")

    def compute_update(
        self, trainable: list[Any], non_trainable: list[Any], x: Any, y: Any, sample_weight: Any
    ) -> StepResult:
        def loss_fn(weights):
            y_pred, new_nt, losses = self.stateless_call(
                weights, non_trainable, x, return_losses=True, training=True
            )
            loss, unscaled = self._compiled_loss(x, y, y_pred, sample_weight, losses)
            return loss, (unscaled, y_pred, new_nt)

        (_, (loss, y_pred, new_non_trainable)), grads = self._value_and_grad(loss_fn)(trainable)
        with self._no_gradient():
            factors = self._step_factors(non_trainable)
            active = self._in_window(non_trainable, self.modulation_epochs)
            factors = ops.where(active, factors, ops.ones_like(factors))
            new_grads = [
                grad
                if group < 0
                else ops.cast(factors[group] * ops.cast(grad, "float32"), grad.dtype)
                for grad, group in zip(grads, self._grad_groups())
            ]
        shapley = (
            self._shapley(trainable, non_trainable, x, y, y_pred) if self.log_shapley else None
        )
        extras = {
            f"{self.log_prefix}_factor_{n}": factors[i] for i, n in enumerate(self.modality_names)
        }
        return StepResult(new_grads, new_non_trainable, y_pred, loss, shapley, extras=extras)

    # --------------------------------------------------------------- the epoch end
    def begin_epoch(self) -> None:
        """Work due when an epoch begins (none by default)."""

    def end_of_epoch(self, validation_data: Any, batch_size: int | None = None) -> None:
        """The method's epoch-end rule from ``validation_data`` (none in the base)."""

    def fit(
        self,
        x: Any = None,
        y: Any = None,
        batch_size: int | None = None,
        epochs: int = 1,
        verbose: Any = "auto",
        callbacks: Any = None,
        validation_split: float = 0.0,
        validation_data: Any = None,
        **kwargs: Any,
    ) -> Any:
        """`keras.Model.fit`, plus the method's epoch-end update from the validation data."""
        x, y, validation_data = split_off_validation(
            x, y, validation_split, validation_data, kwargs
        )
        if validation_data is None:
            raise ValueError(
                f"{self.method} adapts each modality's factor from its unimodal score on "
                "validation data after every epoch: pass validation_data=(x_val, y_val) or "
                "validation_split to fit."
            )
        update = _EpochEnd(self, validation_data, kwargs.get("validation_batch_size"))
        return super().fit(
            x=x,
            y=y,
            batch_size=batch_size,
            epochs=epochs,
            verbose=verbose,
            callbacks=[update, *(callbacks or [])],
            validation_data=validation_data,
            **kwargs,
        )

    def _validation_arrays(self, data: Any, batch_size: int | None) -> tuple[dict[str, Any], Any]:
        """``(x, y)`` as numpy arrays from a tuple of arrays or any data `fit` takes."""
        import numpy as np
        from keras.src.trainers.data_adapters import data_adapter_utils, get_data_adapter

        if isinstance(data, (tuple, list)):
            vx, vy, vw = data_adapter_utils.unpack_x_y_sample_weight(tuple(data))
        else:
            vx, vy, vw = data, None, None
        adapter = get_data_adapter(vx, vy, vw, batch_size=batch_size or 256, shuffle=False)
        xs: list[dict[str, Any]] = []
        ys: list[Any] = []
        for batch in adapter.get_numpy_iterator():
            bx, by, _ = data_adapter_utils.unpack_x_y_sample_weight(batch)
            if by is None:
                raise ValueError(f"{self.method}: the validation data must give labels (x, y).")
            xs.append(bx)
            ys.append(np.asarray(by))
        if not ys:
            raise ValueError(f"{self.method}: the validation data gave no batch.")
        return concatenate_batches(xs), np.concatenate(ys)
