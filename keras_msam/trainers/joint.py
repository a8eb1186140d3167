"""Joint training: the plain multimodal step, with keras-msam's per-modality logging."""

from __future__ import annotations

from typing import Any

import keras

from keras_msam.trainers.base import MultimodalTrainer, StepResult


@keras.saving.register_keras_serializable(package="keras_msam")
class Joint(MultimodalTrainer):
    """Plain training of a multimodal model (the "Joint-Train" baseline).

    One forward/backward pass, gradient handed to the compiled optimizer; with
    ``log_shapley=True`` (default) each step also logs the modalities' Shapley shares and the
    dominant modality, so it can be compared with `SAM` and `MSAM` line by line.

    Like every trainer, a step whose gradients hold NaN or inf is skipped and counted in the
    ``skipped_steps`` log (``nonfinite="skip"``, default; ``"raise"`` or ``"ignore"``: see
    `MultimodalTrainer`).

    Example:
        >>> trainer = keras_msam.Joint(model)
        >>> trainer.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
        >>> trainer.fit(train_ds, epochs=5)
    """

    def compute_update(
        self, trainable: list[Any], non_trainable: list[Any], x: Any, y: Any, sample_weight: Any
    ) -> StepResult:
        loss, y_pred, new_non_trainable, grads, tapped = self._first_pass(
            trainable, non_trainable, x, y, sample_weight
        )
        shapley = (
            self._shapley(trainable, non_trainable, x, y, y_pred, tapped)
            if self.log_shapley
            else None
        )
        return StepResult(list(grads), new_non_trainable, y_pred, loss, shapley)
