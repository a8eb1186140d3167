"""How a trainer forms modality coalitions and reads Shapley values from them (a mixin of
`MultimodalTrainer`): on inputs (a stacked, chunked forward of the whole model), on encoder
features (the fusion head per coalition), or on the features the training pass itself computed
(`_loss_fn_with_features`)."""

from __future__ import annotations

from typing import Any, NamedTuple

import keras
import numpy as np
from keras import ops

from keras_msam.absence import absent_example, leaves, map_leaves
from keras_msam.shapley import (
    coalition_values,
    shapley_from_values,
    shares_and_dominant,
    stack_coalitions,
    unstack_coalitions,
)


class ShapleyResult(NamedTuple):
    """Per-step Shapley values φ (M,), shares v (M,) and dominant index (scalar int32)."""

    phi: Any
    shares: Any
    dominant: Any


COALITION_MODES = ("auto", "inputs", "features")
#: Bytes of stacked coalition inputs one forward may hold when ``coalition_chunk`` is None.
COALITION_MEMORY_BUDGET = 256 * 2**20


class CoalitionMixin:
    """Coalition outputs and Shapley values of a `MultimodalTrainer` (which provides the model,
    the structure, the plan, ``stateless_call`` and the backend hooks)."""

    def _taps_training_features(self) -> bool:
        """Whether the training pass can hand its encoder features to the Shapley coalitions.

        True for logged Shapley values on feature coalitions of a model that behaves the same in
        training and inference (no dropout, BatchNorm...), whose coalition outputs are the base
        class's: the encoders' training outputs are then exactly their inference outputs.
        """
        return (
            self.log_shapley
            and self._feature_coalitions
            and self._training_invariant
            and type(self)._feature_coalition_outputs is CoalitionMixin._feature_coalition_outputs
        )

    def _loss_fn_with_features(
        self,
        trainable: list[Any],
        non_trainable: list[Any],
        x: Any,
        y: Any,
        sample_weight: Any,
        training: bool = True,
    ) -> tuple[Any, tuple[Any, Any, list[Any], Any]]:
        """`_loss_fn` whose forward is ``fuse(encode(·))`` on the batch plus one absent example,
        also returning ``(features, absent features)`` without gradient: the training pass then
        gives the coalitions their encoder outputs (see `_taps_training_features`), and the loss
        is that of the batch alone (a model without dropout or BatchNorm encodes each example on
        its own, so the extra example changes nothing)."""
        names = self._structure.names
        absent = absent_example(x, names, self._structure.absence)
        joined = {
            name: map_leaves(
                lambda a, b: ops.concatenate([a, ops.cast(b, a.dtype)], axis=0),
                x[name],
                absent[name],
            )
            for name in names
        }
        mapping = self._state_mapping(trainable, non_trainable)
        with keras.StatelessScope(state_mapping=mapping, collect_losses=True) as scope:
            features = self.model.encode(joined, training=training)
            present = {name: feature[:-1] for name, feature in features.items()}
            y_pred = self.model.fuse(present, training=training)
            losses = self.losses
        new_non_trainable = [scope.get_current_value(v) for v in self.non_trainable_variables]
        loss, unscaled = self._loss_of_forward(x, y, y_pred, sample_weight, losses, training)
        tapped = (
            {name: ops.stop_gradient(feature) for name, feature in present.items()},
            {name: ops.stop_gradient(feature[-1:]) for name, feature in features.items()},
        )
        return loss, (unscaled, y_pred, new_non_trainable, tapped)

    def _first_pass(
        self, trainable: list[Any], non_trainable: list[Any], x: Any, y: Any, sample_weight: Any
    ) -> tuple[Any, Any, list[Any], list[Any], Any]:
        """The step's first forward/backward at ``trainable``: ``(loss, y_pred, new
        non-trainables, gradients, tapped features or None)``."""
        if self._taps_training_features():
            (_, (loss, y_pred, new_nt, tapped)), grads = self._value_and_grad(
                self._loss_fn_with_features
            )(trainable, non_trainable, x, y, sample_weight)
            return loss, y_pred, new_nt, grads, tapped
        (_, (loss, y_pred, new_nt)), grads = self._value_and_grad(self._loss_fn)(
            trainable, non_trainable, x, y, sample_weight
        )
        return loss, y_pred, new_nt, grads, None

    def _coalition_outputs(
        self, trainable: list[Any], non_trainable: list[Any], x: Any, full_outputs: Any = None
    ) -> Any:
        """Outputs (K, B, C) of every coalition of the plan, in inference mode, without gradient.

        The coalitions run as one stacked forward, with two savings that change no value:
        the empty coalition (all inputs zero) gives the same output for every example, so it
        runs on a single example and is broadcast; and ``full_outputs`` (the first training
        pass's predictions, given only when the model behaves the same in training and
        inference) replaces the forward of the full coalition.
        """
        if self._feature_coalitions:
            return self._feature_coalition_outputs(trainable, non_trainable, x)
        masks = self._plan.masks
        names = self._structure.names
        has_empty = not masks[0].any()
        reuse_full = full_outputs is not None and bool(masks[-1].all())
        middle = masks[(1 if has_empty else 0) : (len(masks) - 1 if reuse_full else len(masks))]
        chunk = self._coalitions_per_forward(x, len(middle))
        chunks = [middle[i : i + chunk] for i in range(0, len(middle), chunk)] or [middle[:0]]
        absence = self._structure.absence
        batch = ops.shape(leaves(x)[0])[0]
        parts = []
        for index, masks_of_chunk in enumerate(chunks):
            inputs = (
                stack_coalitions(x, names, masks_of_chunk, absence) if len(masks_of_chunk) else None
            )
            last = index == len(chunks) - 1
            if has_empty and last:  # the empty coalition rides on the last forward, one example
                empty_inputs = absent_example(x, names, absence)
                inputs = (
                    empty_inputs
                    if inputs is None
                    else map_leaves(
                        lambda a, b: ops.concatenate([a, b], axis=0), inputs, empty_inputs
                    )
                )
            with self._no_gradient():
                outputs, _ = self.stateless_call(trainable, non_trainable, inputs, training=False)
            outputs = ops.stop_gradient(outputs)
            if len(masks_of_chunk):
                rows = outputs[: len(masks_of_chunk) * batch]
                parts.append(unstack_coalitions(rows, len(masks_of_chunk)))
            if has_empty and last:
                empty = outputs[-1:]
                parts.insert(
                    0,
                    ops.broadcast_to(
                        ops.expand_dims(empty, 0), (1, batch) + tuple(empty.shape[1:])
                    ),
                )
        if reuse_full:
            parts.append(
                ops.expand_dims(ops.stop_gradient(ops.cast(full_outputs, parts[0].dtype)), 0)
            )
        return parts[0] if len(parts) == 1 else ops.concatenate(parts, axis=0)

    def _coalitions_per_forward(self, x: Any, count: int) -> int:
        """How many coalition copies of the batch one forward stacks (``coalition_chunk``).

        Auto (None): as many as fit in ``COALITION_MEMORY_BUDGET`` bytes of stacked inputs, so
        2^M copies of a large batch (video, M = 6) run as several forwards instead of one that
        would exhaust memory. The values are the same either way.
        """
        if count == 0:
            return 1
        if self.coalition_chunk is not None:
            return min(self.coalition_chunk, count)
        per_copy = 0
        for value in leaves({name: x[name] for name in self._structure.names}):
            shape = tuple(value.shape)
            batch = shape[0] if shape[0] is not None else 256
            size = int(np.prod([d for d in shape[1:] if d is not None], dtype=np.int64))
            per_copy += (
                batch * size * np.dtype(keras.backend.standardize_dtype(value.dtype)).itemsize
            )
        return int(max(1, min(count, COALITION_MEMORY_BUDGET // max(per_copy, 1))))

    def _feature_coalition_outputs(
        self, trainable: list[Any], non_trainable: list[Any], x: Any
    ) -> Any:
        """Coalition outputs (K, B, C) formed on encoder features (``coalitions="features"``)."""
        names = self._structure.names
        mapping = self._state_mapping(trainable, non_trainable)
        with self._no_gradient(), keras.StatelessScope(state_mapping=mapping):
            features = self.model.encode(x, training=False)
            absent = self.model.encode(
                absent_example(x, names, self._structure.absence), training=False
            )
        return self._fused_coalitions(trainable, non_trainable, features, absent)

    def _fused_coalitions(
        self, trainable: list[Any], non_trainable: list[Any], features: Any, absent: Any
    ) -> Any:
        """The fusion head on every coalition's features (an absent modality's: ``absent``, its
        encoder's output for one absent example), one stacked inference forward: (K, B, C)."""
        names = self._structure.names
        masks = self._plan.masks
        mapping = self._state_mapping(trainable, non_trainable)
        with self._no_gradient(), keras.StatelessScope(state_mapping=mapping):
            stacked = {}
            for index, name in enumerate(names):
                present = features[name]
                keep = ops.convert_to_tensor(
                    masks[:, index].reshape((masks.shape[0],) + (1,) * len(present.shape))
                )
                tiled = ops.where(
                    keep, ops.expand_dims(present, 0), ops.expand_dims(absent[name], 0)
                )
                stacked[name] = ops.reshape(tiled, (-1,) + tuple(present.shape[1:]))
            outputs = self.model.fuse(stacked, training=False)
        return ops.stop_gradient(unstack_coalitions(outputs, self._plan.num_coalitions))

    def _shapley_from_outputs(self, outputs: Any, y: Any) -> ShapleyResult:
        values = coalition_values(outputs, y, self.shapley_value, self.resolved_from_logits)
        # Under tf.distribute each replica sees part of the batch: use the global values.
        values = self._cross_replica_mean(values)
        phi = shapley_from_values(values, self._plan)
        shares, dominant = shares_and_dominant(phi)
        return ShapleyResult(phi, shares, dominant)

    def _shapley(
        self,
        trainable: list[Any],
        non_trainable: list[Any],
        x: Any,
        y: Any,
        training_predictions: Any = None,
        training_features: Any = None,
    ) -> ShapleyResult:
        """Shapley values, shares and dominant modality of the batch at ``trainable``.

        ``training_predictions`` (the first pass's outputs) stand in for the full coalition's
        inference forward when the model has no layer that behaves differently in training;
        ``training_features`` (``(features, absent features)`` tapped from the first pass, see
        `_loss_fn_with_features`) spare the encoders' inference forward.
        """
        if training_features is not None:
            outputs = self._fused_coalitions(trainable, non_trainable, *training_features)
            return self._shapley_from_outputs(outputs, y)
        full = training_predictions if self._training_invariant else None
        outputs = self._coalition_outputs(trainable, non_trainable, x, full)
        return self._shapley_from_outputs(outputs, y)
