"""Evaluation helpers: multimodal accuracy and each modality's accuracy with the others zeroed."""

from __future__ import annotations

from typing import Any

import numpy as np
from keras import ops

from keras_msam.modalities import modality_structure, validate_inputs
from keras_msam.shapley import class_indices, stack_coalitions, unstack_coalitions


def _batches(x: dict[str, np.ndarray], y: np.ndarray, batch_size: int):
    count = len(y)
    for start in range(0, count, batch_size):
        yield (
            {k: v[start : start + batch_size] for k, v in x.items()},
            y[start : start + batch_size],
        )


def modality_accuracies(
    model: Any, x: dict[str, np.ndarray], y: np.ndarray, batch_size: int = 256
) -> dict[str, float]:
    """Accuracy of the full input and of each modality alone (all other modalities zeroed).

    Args:
        model: A keras-msam trainer or a Keras model with dict inputs.
        x: ``{modality: array}`` for the whole evaluation set.
        y: Labels (sparse or one-hot).
        batch_size: Examples per forward (each forward stacks M + 1 coalitions).

    Returns:
        ``{"multimodal": acc, "<modality>": acc, ...}``.
    """
    inner = getattr(model, "model", model)
    structure = modality_structure(inner)
    validate_inputs(x, structure, where="x")
    names = structure.names
    masks = np.concatenate([np.ones((1, len(names)), bool), np.eye(len(names), dtype=bool)])
    hits = np.zeros(len(masks))
    for batch_x, batch_y in _batches(x, np.asarray(y), batch_size):
        outputs = unstack_coalitions(
            inner(stack_coalitions(batch_x, names, masks), training=False), len(masks)
        )
        num_classes = int(outputs.shape[-1])
        if num_classes == 1:
            predicted = ops.cast(outputs[..., 0] > 0, "int32")
        else:
            predicted = ops.argmax(outputs, axis=-1)
        labels = class_indices(batch_y, num_classes)
        correct = ops.equal(
            ops.cast(predicted, "int32"), ops.expand_dims(ops.cast(labels, "int32"), 0)
        )
        hits += ops.convert_to_numpy(ops.sum(ops.cast(correct, "float32"), axis=1))
    accuracy = hits / max(len(y), 1)
    result = {"multimodal": float(accuracy[0])}
    result.update({name: float(accuracy[i + 1]) for i, name in enumerate(names)})
    return result
