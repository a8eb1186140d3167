"""Loss sharpness of a trained model: the loss increase under a worst-case ρ-perturbation.

    L(θ)          mean loss over the data, inference mode
    ε             ρ · g / ‖g‖₂,  g = ∇L(θ) over the same data   (first-order worst case, SAM's ε)
    sharpness     L(θ + ε) − L(θ)

plus, with ``validation_data``, the generalisation gap: validation loss − training loss and
training accuracy − validation accuracy.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from keras_msam.data_sources import is_array_input
from keras_msam.evaluation import batches as _batches
from keras_msam.perturbation import sam_perturbation
from keras_msam.shapley import class_indices


def _accuracy_hits(y_pred: Any, y: Any) -> float:
    y_pred = ops.convert_to_numpy(ops.cast(y_pred, "float32"))
    num_classes = y_pred.shape[-1]
    labels = ops.convert_to_numpy(class_indices(y, num_classes)).reshape(-1)
    predicted = (y_pred[..., 0] > 0).astype(int) if num_classes == 1 else y_pred.argmax(-1)
    return float((predicted == labels).sum())


def sharpness(
    model: Any,
    x: Any,
    y: Any = None,
    rho: float = 0.05,
    loss: Any = None,
    validation_data: Any = None,
    batch_size: int = 256,
) -> dict[str, float]:
    """Sharpness of ``model``'s loss at its current weights on ``(x, y)``.

    Args:
        model: A keras-msam trainer or a Keras model with dict inputs.
        x: ``{modality: array}`` (usually the training set), or a data set of
            ``(inputs, labels)`` batches (PyDataset, tf.data, torch DataLoader), read in
            inference mode, two passes.
        y: Labels of array inputs; None for a data set.
        rho: Radius ρ > 0 of the perturbation.
        loss: Loss to measure; default the trainer's compiled loss, else sparse categorical
            cross-entropy on logits.
        validation_data: Optional ``(x_val, y_val)`` or a data set, for the
            train/validation gap.
        batch_size: Examples per forward for array inputs.

    Returns:
        ``{"loss", "perturbed_loss", "sharpness", "accuracy"}`` and, with validation data,
        ``{"validation_loss", "validation_accuracy", "loss_gap", "accuracy_gap"}``.
    """
    from keras_msam.trainers.joint import Joint

    rho = float(rho)
    if not rho > 0:
        raise ValueError(f"rho must be > 0, got {rho!r}.")
    inner = getattr(model, "model", model)
    if loss is None:
        loss = getattr(model, "loss", None) or keras.losses.SparseCategoricalCrossentropy(
            from_logits=True
        )
    probe = Joint(inner, log_shapley=False)
    probe.compile(optimizer=keras.optimizers.SGD(0.0), loss=loss)
    trainable = [v.value for v in probe.trainable_variables]
    non_trainable = [v.value for v in probe.non_trainable_variables]
    value_and_grad = probe._value_and_grad(probe._loss_fn)

    def mean_loss(weights, data_x, data_y, with_grad):
        total, hits, grads, count = 0.0, 0.0, None, 0
        for batch_x, batch_y in _batches(inner, data_x, data_y, batch_size):
            size = len(batch_y)
            count += size
            if with_grad:
                (_, (value, y_pred, _)), batch_grads = value_and_grad(
                    weights, non_trainable, batch_x, batch_y, None, training=False
                )
                batch_grads = [ops.convert_to_numpy(g) * size for g in batch_grads]
                grads = (
                    batch_grads if grads is None else [a + b for a, b in zip(grads, batch_grads)]
                )
            else:
                _, (value, y_pred, _) = probe._loss_fn(
                    weights, non_trainable, batch_x, batch_y, None, training=False
                )
            total += float(ops.convert_to_numpy(value)) * size
            hits += _accuracy_hits(y_pred, batch_y)
        count = max(count, 1)
        if grads is not None:
            grads = [g / count for g in grads]
        return total / count, hits / count, grads

    base, accuracy, grads = mean_loss(trainable, x, y, True)
    epsilon = sam_perturbation([ops.convert_to_tensor(g) for g in grads], rho, "l2")
    perturbed = [w + ops.cast(e, w.dtype) for w, e in zip(trainable, epsilon)]
    perturbed_loss, _, _ = mean_loss(perturbed, x, y, False)
    result = {
        "loss": base,
        "perturbed_loss": perturbed_loss,
        "sharpness": perturbed_loss - base,
        "accuracy": accuracy,
    }
    if validation_data is not None:
        if isinstance(validation_data, (tuple, list)) and is_array_input(validation_data[0]):
            val_x, val_y = validation_data
        else:
            val_x, val_y = validation_data, None
        val_loss, val_accuracy, _ = mean_loss(trainable, val_x, val_y, False)
        result.update(
            validation_loss=val_loss,
            validation_accuracy=val_accuracy,
            loss_gap=val_loss - base,
            accuracy_gap=accuracy - val_accuracy,
        )
    return result
