"""Trainer-owned unimodal heads: one linear classifier per modality on its encoder's features.

MMPareto's unimodal heads and CGGM's classifiers are both a ``Dense(num_classes)`` per modality
on that modality's (mean-pooled) features from a zoo model's ``encode``. They belong to the
trainer (saved with it), are used only in training, and their loss is the mean cross-entropy
of each head. This module builds them and computes their logits and losses.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
from keras import ops

from keras_msam.shapley import class_indices


def has_encoders(model: keras.Model) -> bool:
    """Whether the model exposes per-modality features (zoo ``encode``/``fuse``)."""
    return callable(getattr(model, "encode", None)) and callable(getattr(model, "fuse", None))


def feature_shapes(trainer: Any, model: keras.Model) -> dict[str, tuple]:
    """The shape (None, ...) of each modality's encoder output."""
    names = trainer.modality_names
    encoders = getattr(model, "encoders", None)
    if isinstance(encoders, dict) and all(n in encoders for n in names):
        shapes = {n: encoders[n].outputs[0].shape for n in names}
    else:
        from keras.src.backend import compute_output_spec

        dtypes = getattr(model, "modality_dtypes", {})
        specs = {
            n: keras.KerasTensor(
                (None, *trainer.structure.input_shapes[n]), dtype=dtypes.get(n, "float32")
            )
            for n in names
        }
        outputs = compute_output_spec(lambda inputs: model.encode(inputs), specs)
        shapes = {n: outputs[n].shape for n in names}
    return {n: tuple(shape) for n, shape in shapes.items()}


def feature_widths(trainer: Any, model: keras.Model) -> dict[str, int]:
    """The last-axis width of each modality's encoder output."""
    return {n: int(shape[-1]) for n, shape in feature_shapes(trainer, model).items()}


def build_heads(
    trainer: Any, model: keras.Model, prefix: str, fail: Callable[[str], Exception]
) -> list[keras.layers.Dense]:
    """One ``Dense(num_classes)`` named ``<prefix>_<modality>`` per modality, built.

    ``fail(message)`` makes the method's error for a model without encoders or classes.
    """
    if not has_encoders(model):
        raise fail(
            f"needs per-modality encoders to put unimodal heads on (a zoo model: "
            f"`encode(inputs)`/`fuse(features)`); model {model.name!r} has none. Wrap the "
            f"model as a zoo MultimodalClassifier."
        )
    num_classes = trainer._num_classes()
    if num_classes is None:
        raise fail(f"cannot read the number of classes of model {model.name!r}.")
    widths = feature_widths(trainer, model)
    heads = []
    for name in trainer.modality_names:
        head = keras.layers.Dense(num_classes, name=f"{prefix}_{name}", dtype=trainer.dtype_policy)
        head.build((None, widths[name]))
        heads.append(head)
    return heads


def pooled(feature: Any) -> Any:
    """Features of rank > 2 mean-pooled over their middle axes (as the official models do)."""
    if len(feature.shape) > 2:
        return ops.mean(feature, axis=tuple(range(1, len(feature.shape) - 1)))
    return feature


def head_logits(
    heads: list[keras.layers.Dense], names: tuple[str, ...], features: dict[str, Any]
) -> Any:
    """Logits (M, B, C), float32, of each modality's head on its pooled features."""
    return ops.stack(
        [
            ops.cast(head(pooled(features[name])), "float32")
            for name, head in zip(names, heads, strict=True)
        ]
    )


def cross_entropies(unimodal: Any, y: Any, sample_weight: Any) -> Any:
    """Mean cross-entropy over the batch of each modality's logits (sample-weighted), (M,)."""
    num_classes = int(unimodal.shape[-1])
    losses = []
    for index in range(int(unimodal.shape[0])):
        if num_classes == 1:
            target = ops.reshape(ops.cast(ops.convert_to_tensor(y), "float32"), (-1, 1))
            ce = keras.losses.binary_crossentropy(target, unimodal[index], from_logits=True)
        else:
            ce = keras.losses.sparse_categorical_crossentropy(
                class_indices(y, num_classes), unimodal[index], from_logits=True
            )
        ce = ops.reshape(ops.cast(ce, "float32"), (-1,))
        if sample_weight is not None:
            ce = ce * ops.reshape(ops.cast(sample_weight, "float32"), (-1,))
        losses.append(ops.mean(ce))
    return ops.stack(losses)
