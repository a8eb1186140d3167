"""Evaluation helpers: multimodal accuracy and each modality's accuracy (or cross-entropy) with
the others zeroed.

Every helper takes what `fit` takes: ``{modality: array}`` with labels ``y``, or a data set that
yields ``(inputs, labels)`` batches (``keras.utils.PyDataset`` such as ``zoo.datasets.load``, a
``tf.data.Dataset``, a ``torch.utils.data.DataLoader``; ``y`` None); see `keras_msam.data_sources`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from keras import ops

from keras_msam.data_sources import is_array_input, iterate_batches
from keras_msam.modalities import ModalityStructure, structure_of, validate_inputs
from keras_msam.shapley import class_indices, stack_coalitions, unstack_coalitions


def batches(
    model: Any,
    x: Any,
    y: Any = None,
    batch_size: int = 256,
    structure: ModalityStructure | None = None,
):
    """Yields ``({modality: array}, labels)`` batches of ``x`` (arrays with ``y``, or a data set)
    whose inputs are checked against ``model``'s modalities."""
    structure = structure or structure_of(model)
    if is_array_input(x):
        validate_inputs(x, structure, where="x")
    for batch_x, batch_y in iterate_batches(x, y, batch_size):
        if not is_array_input(x):
            validate_inputs(batch_x, structure, where="x")
        yield batch_x, batch_y


def coalition_accuracies(
    model: Any,
    x: Any,
    y: Any,
    masks: np.ndarray,
    batch_size: int = 256,
    absence: dict[str, Any] | None = None,
) -> np.ndarray:
    """Accuracy over the data set of each coalition (row of ``masks``, modalities sorted by name;
    absent modalities at their absence values, `keras_msam.absence`), in inference mode, one
    stacked forward per batch."""
    structure = structure_of(model, absence)  # a trainer's own call runs (e.g. its gains)
    hits = np.zeros(len(masks))
    count = 0
    for batch_x, batch_y in batches(model, x, y, batch_size, structure):
        count += len(batch_y)
        stacked = stack_coalitions(batch_x, structure.names, masks, structure.absence)
        outputs = unstack_coalitions(model(stacked, training=False), len(masks))
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
    return hits / max(count, 1)


def modality_accuracies(
    model: Any,
    x: Any,
    y: Any = None,
    batch_size: int = 256,
    absence: dict[str, Any] | None = None,
) -> dict[str, float]:
    """Accuracy of the full input and of each modality alone (all other modalities zeroed).

    Args:
        model: A keras-msam trainer or a Keras model with dict inputs.
        x: ``{modality: array}`` for the whole evaluation set, or a data set of
            ``(inputs, labels)`` batches (PyDataset, tf.data, torch DataLoader).
        y: Labels (sparse or one-hot) of array inputs; None for a data set.
        batch_size: Examples per forward for array inputs (each forward stacks M + 1
            coalitions); a data set keeps its own batches.
        absence: Absence rules of the zeroed modalities for this call (`keras_msam.absence`).

    Returns:
        ``{"multimodal": acc, "<modality>": acc, ...}``.
    """
    names = structure_of(model).names
    masks = np.concatenate([np.ones((1, len(names)), bool), np.eye(len(names), dtype=bool)])
    accuracy = coalition_accuracies(model, x, y, masks, batch_size, absence)
    result = {"multimodal": float(accuracy[0])}
    result.update({name: float(accuracy[i + 1]) for i, name in enumerate(names)})
    return result


def coalition_cross_entropies(
    model: Any,
    x: Any,
    y: Any,
    masks: np.ndarray,
    from_logits: bool = True,
    batch_size: int = 256,
    absence: dict[str, Any] | None = None,
) -> np.ndarray:
    """Mean cross-entropy −log p(y) over the data set of each coalition (row of ``masks``,
    modalities sorted by name; absent modalities zeroed), in inference mode.

    Outputs are logits (softmax; sigmoid for one output) unless ``from_logits`` is False, when
    they are probabilities (clipped at 1e-7 before the log).
    """
    structure = structure_of(model, absence)
    total = np.zeros(len(masks))
    count = 0
    for batch_x, batch_y in batches(model, x, y, batch_size, structure):
        count += len(batch_y)
        stacked = stack_coalitions(batch_x, structure.names, masks, structure.absence)
        outputs = ops.cast(
            unstack_coalitions(model(stacked, training=False), len(masks)), "float32"
        )
        num_classes = int(outputs.shape[-1])
        if num_classes == 1:
            target = ops.reshape(ops.cast(ops.convert_to_tensor(batch_y), "float32"), (1, -1))
            signed = (2.0 * target - 1.0) * outputs[..., 0]
            if from_logits:
                losses = ops.softplus(-signed)
            else:
                prob = target * outputs[..., 0] + (1.0 - target) * (1.0 - outputs[..., 0])
                losses = -ops.log(ops.maximum(prob, 1e-7))
        else:
            one_hot = ops.one_hot(class_indices(batch_y, num_classes), num_classes)
            if from_logits:
                log_prob = ops.log_softmax(outputs, axis=-1)
            else:
                log_prob = ops.log(ops.maximum(outputs, 1e-7))
            losses = -ops.sum(log_prob * ops.expand_dims(one_hot, 0), axis=-1)
        total += ops.convert_to_numpy(ops.sum(losses, axis=1))
    return total / max(count, 1)


def modality_cross_entropies(
    model: Any,
    x: Any,
    y: Any = None,
    from_logits: bool = True,
    batch_size: int = 256,
    absence: dict[str, Any] | None = None,
) -> dict[str, float]:
    """Mean cross-entropy of each modality alone (all other modalities zeroed); ``x``/``y`` and
    ``absence`` as in `modality_accuracies`.

    Returns:
        ``{"<modality>": loss, ...}``.
    """
    names = structure_of(model).names
    losses = coalition_cross_entropies(
        model, x, y, np.eye(len(names), dtype=bool), from_logits, batch_size, absence
    )
    return {name: float(losses[i]) for i, name in enumerate(names)}


def evaluate_missing(
    model: Any,
    x: Any,
    y: Any = None,
    batch_size: int = 256,
    absence: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Accuracy under every pattern of missing (zeroed) modalities, MWAM's robustness report.

    Every non-empty subset S of the modalities is evaluated with the modalities outside S set
    to zeros (the full input included). ``average`` is the mean accuracy over all of them and
    ``collapse_rate`` (MWAM's performance collapse rate, PCR) the mean relative drop from the
    full-input accuracy over the incomplete patterns, mean_S (acc_full − acc_S) / acc_full — the
    reading that reproduces the paper's Avg/PCR pairs (e.g. SURF SF-MD 92.85 / 5.43 %).

    Args:
        model: A keras-msam trainer or a Keras model with dict inputs.
        x: ``{modality: array}`` for the whole evaluation set (use validation or test data), or
            a data set of ``(inputs, labels)`` batches (PyDataset, tf.data, torch DataLoader).
        y: Labels (sparse or one-hot) of array inputs; None for a data set.
        batch_size: Examples per forward for array inputs (each forward stacks 2^M − 1
            patterns); a data set keeps its own batches.
        absence: Absence rules of the missing modalities (`keras_msam.absence`): zeros by
            default, per input for a modality of several inputs.

    Returns:
        ``{"accuracy": {"audio+visual": acc, "audio": acc, ...}, "missing": {pattern:
        [missing modalities]}, "full": acc, "average": mean, "collapse_rate": PCR}``; pattern
        names join the *present* modalities with ``+``.
    """
    names = structure_of(model).names
    count = len(names)
    masks = np.array(
        [[(code >> i) & 1 for i in range(count)] for code in range(1, 2**count)], dtype=bool
    )
    masks = masks[np.argsort(-masks.sum(axis=1), kind="stable")]  # full input first
    accuracy = coalition_accuracies(model, x, y, masks, batch_size, absence)
    patterns = ["+".join(n for n, keep in zip(names, mask) if keep) for mask in masks]
    full = float(accuracy[0])
    drops = [(full - float(a)) / full if full > 0 else 0.0 for a in accuracy[1:]]
    return {
        "accuracy": {p: float(a) for p, a in zip(patterns, accuracy)},
        "missing": {
            p: [n for n, keep in zip(names, mask) if not keep] for p, mask in zip(patterns, masks)
        },
        "full": full,
        "average": float(np.mean(accuracy)),
        "collapse_rate": float(np.mean(drops)) if drops else 0.0,
    }
