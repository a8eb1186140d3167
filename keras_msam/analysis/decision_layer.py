"""Decision-layer diagnostics for linear late fusion (our design; arXiv 2510.14411 proposes none).

The decision layer of a linear late-fusion model (zoo ``concat`` or ``sum`` fusion) splits into
one block per modality: logits = Σ_m W_mᵀ f_m + b. The report measures, per modality, how much
the decision layer relies on it:

* ``weight_norm``: ‖W_m‖_F, the Frobenius norm of the modality's block of the head, and its
  share of the total;
* ``mean_abs_logit``: the mean over the data of |W_mᵀ f_m| (all classes), and its share — how
  much of the decision the modality actually carries on this data;
* ``true_class_logit``: the mean contribution to the true class's logit;
* ``accuracy`` / ``per_class_accuracy``: accuracy of the modality's own decision,
  argmax(W_mᵀ f_m + b/M) (OGM-GE's unimodal split, the bias shared evenly), overall and per class.

A modality with a small share of the weight norm and of the logits, and a low unimodal accuracy,
is the one the decision layer has learnt to ignore.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from keras import ops

from keras_msam.evaluation import batches
from keras_msam.modalities import modality_structure
from keras_msam.shapley import class_indices


def _linear_late_fusion_model(model: Any) -> Any:
    inner = getattr(model, "model", model)
    if not getattr(inner, "supports_unimodal_logits", False):
        raise ValueError(
            f"decision_layer_report needs a linear late-fusion model (zoo 'concat' or 'sum' "
            f"fusion, with `encode` and `unimodal_logits`); model {inner.name!r} has none."
        )
    return inner


def head_blocks(model: Any, feature_dims: dict[str, int]) -> dict[str, np.ndarray]:
    """Each modality's block W_m (feature dim × classes) of the linear decision layer.

    Read off the unimodal split itself, which is linear and bias-free in each modality's
    features: feeding the identity matrix as modality m's features returns W_m.
    """
    inner = _linear_late_fusion_model(model)
    blocks = {}
    for name, dim in feature_dims.items():
        features = {
            other: np.eye(dim, dtype="float32")
            if other == name
            else np.zeros((dim, other_dim), "float32")
            for other, other_dim in feature_dims.items()
        }
        blocks[name] = np.asarray(ops.convert_to_numpy(inner.unimodal_logits(features)[name]))
    return blocks


def decision_layer_report(
    model: Any, x: Any, y: Any = None, batch_size: int = 256
) -> dict[str, Any]:
    """Per-modality weight norms, logit contributions and unimodal accuracies of the head.

    Args:
        model: A keras-msam trainer or a zoo model with linear late fusion.
        x: ``{modality: array}`` (validation or test data), or a data set of
            ``(inputs, labels)`` batches (PyDataset, tf.data, torch DataLoader).
        y: Labels (sparse or one-hot) of array inputs; None for a data set.
        batch_size: Examples per forward for array inputs.

    Returns:
        A dict with ``modalities`` and, each keyed by modality: ``weight_norm``,
        ``weight_norm_share``, ``mean_abs_logit``, ``logit_share``, ``true_class_logit``,
        ``accuracy`` and ``per_class_accuracy`` (an array over classes, NaN for a class absent
        from ``y``).
    """
    inner = _linear_late_fusion_model(model)
    names = modality_structure(inner).names
    bias = np.asarray(ops.convert_to_numpy(inner.head_bias()))
    num_classes = int(bias.shape[-1])
    support = np.zeros(num_classes)
    abs_logit = dict.fromkeys(names, 0.0)
    true_logit = dict.fromkeys(names, 0.0)
    hits = {name: np.zeros(num_classes) for name in names}
    feature_dims: dict[str, int] = {}
    for batch_x, batch_y in batches(inner, x, y, batch_size):
        features = inner.encode(batch_x, training=False)
        feature_dims = {name: int(features[name].shape[-1]) for name in names}
        contributions = inner.unimodal_logits(features)
        labels = np.asarray(ops.convert_to_numpy(class_indices(batch_y, num_classes)))
        labels = labels.astype(int).reshape(-1)
        support += np.bincount(labels, minlength=num_classes)
        for name in names:
            logits = np.asarray(ops.convert_to_numpy(contributions[name]), dtype=np.float64)
            abs_logit[name] += float(np.abs(logits).mean(axis=1).sum())
            true_logit[name] += float(logits[np.arange(len(labels)), labels].sum())
            predicted = np.argmax(logits + bias / len(names), axis=-1)
            np.add.at(hits[name], labels, predicted == labels)
    count = max(int(support.sum()), 1)
    blocks = head_blocks(inner, feature_dims)
    norms = {name: float(np.linalg.norm(blocks[name])) for name in names}
    mean_abs = {name: abs_logit[name] / count for name in names}

    def shares(values: dict[str, float]) -> dict[str, float]:
        total = sum(values.values())
        return {k: (v / total if total > 0 else 1 / len(values)) for k, v in values.items()}

    with np.errstate(invalid="ignore", divide="ignore"):
        per_class = {name: np.where(support > 0, hits[name] / support, np.nan) for name in names}
    return {
        "modalities": list(names),
        "weight_norm": norms,
        "weight_norm_share": shares(norms),
        "mean_abs_logit": mean_abs,
        "logit_share": shares(mean_abs),
        "true_class_logit": {name: true_logit[name] / count for name in names},
        "accuracy": {name: float(hits[name].sum() / count) for name in names},
        "per_class_accuracy": per_class,
    }
