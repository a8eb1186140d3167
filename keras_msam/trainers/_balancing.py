"""What the gradient-modulation trainers (OGM-GE, AGM, MWAM) share.

* Trainer-owned state: counters, running means and EMA banks are non-trainable Keras variables
  of the trainer, read from and written to the step's ``non_trainable`` state list (never Python
  attributes mutated inside the step), so they are threaded on JAX, assigned after the step on
  TensorFlow/PyTorch, and saved with the trainer.
* An epoch counter, set by a callback that `fit` adds, for methods active in an epoch window.
* Forwards that also give per-modality logits: OGM-GE's split of a linear late-fusion head
  (``"split"``) or the model's output with only that modality present (``"zero_padded"``).
* The compiled loss of given predictions, and Gaussian noise drawn from a seed generator whose
  state is part of the step state.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops

from keras_msam.shapley import class_indices, stack_coalitions, unstack_coalitions
from keras_msam.trainers import _checks
from keras_msam.trainers.base import MultimodalTrainer

UNIMODAL_SOURCES = ("auto", "split", "zero_padded")


def check_window(window: Any, name: str = "modulation_epochs") -> tuple[int, int] | None:
    """Validates an inclusive ``(start, end)`` epoch window (None: every epoch)."""
    return _checks.window(window, name)


def check_positive(value: Any, name: str, allow_zero: bool = True) -> float:
    """Validates a finite number ≥ 0 (or > 0 with ``allow_zero=False``)."""
    return _checks.positive(value, name, allow_zero)


def true_class_probability(outputs: Any, y: Any, from_logits: bool) -> Any:
    """p(y_i) for outputs (..., B, C): softmax (sigmoid for C = 1) unless already probabilities."""
    outputs = ops.cast(outputs, "float32")
    num_classes = int(outputs.shape[-1])
    if num_classes == 1:
        target = ops.reshape(ops.cast(ops.convert_to_tensor(y), "float32"), (-1,))
        prob = ops.sigmoid(outputs[..., 0]) if from_logits else outputs[..., 0]
        return target * prob + (1.0 - target) * (1.0 - prob)
    prob = ops.softmax(outputs, axis=-1) if from_logits else outputs
    one_hot = ops.one_hot(class_indices(y, num_classes), num_classes, dtype="float32")
    return ops.sum(prob * one_hot, axis=-1)


def scale_features(features: dict[str, Any], names: Any, factors: Any) -> dict[str, Any]:
    """Each modality's features times its per-example factor (M, B), broadcast over the rest."""
    scaled = {}
    for index, name in enumerate(names):
        feature = ops.convert_to_tensor(features[name])
        factor = ops.reshape(factors[index], (-1,) + (1,) * (len(feature.shape) - 1))
        scaled[name] = feature * ops.cast(factor, feature.dtype)
    return scaled


def split_off_validation(
    x: Any, y: Any, validation_split: float, validation_data: Any, kwargs: dict[str, Any]
) -> tuple[Any, Any, Any]:
    """Keras's own ``validation_split`` done before `fit`, for methods that need the validation
    arrays themselves; ``kwargs["sample_weight"]`` is split alike. Returns (x, y, validation)."""
    if validation_split and validation_data is None:
        from keras.src.trainers.data_adapters import array_slicing

        (x, y, sample_weight), validation_data = array_slicing.train_validation_split(
            (x, y, kwargs.pop("sample_weight", None)), validation_split=validation_split
        )
        kwargs["sample_weight"] = sample_weight
    return x, y, validation_data


class _StoreWithout:
    """A read-only view of a saving store without some keys (Keras checks their count)."""

    def __init__(self, store: Any, hidden: set[str]) -> None:
        self._store = store
        self._hidden = hidden

    def keys(self) -> list[str]:
        return [key for key in self._store.keys() if key not in self._hidden]

    def __getitem__(self, key: str) -> Any:
        return self._store[key]

    def __len__(self) -> int:
        return len(self.keys())


class _EpochCounter(keras.callbacks.Callback):
    """Writes the current epoch index into the trainer's ``epoch`` variable."""

    def __init__(self, variable: keras.Variable) -> None:
        super().__init__()
        self._variable = variable

    def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
        self._variable.assign(float(epoch))


class BalancingTrainer(MultimodalTrainer):
    """Base of the balancing trainers: own state, epoch counter, per-modality logits."""

    requires_multiple_modalities = True

    def __init__(self, model: keras.Model, **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        self._epoch = self._add_state("epoch")

    # ------------------------------------------------------------------ state
    def _add_state(self, name: str, shape: tuple[int, ...] = (), value: float = 0.0) -> Any:
        return self.add_weight(
            name=name,
            shape=shape,
            initializer=keras.initializers.Constant(value),
            trainable=False,
            dtype="float32",
        )

    def _state_index(self, variable: Any) -> int:
        for index, candidate in enumerate(self.non_trainable_variables):
            if candidate is variable:
                return index
        raise KeyError(f"{variable.path} is not a non-trainable variable of {self.name!r}.")

    def _read(self, non_trainable: list[Any], variable: Any) -> Any:
        return non_trainable[self._state_index(variable)]

    def _write(self, non_trainable: list[Any], updates: list[tuple[Any, Any]]) -> list[Any]:
        new = list(non_trainable)
        for variable, value in updates:
            new[self._state_index(variable)] = ops.cast(value, variable.dtype)
        return new

    def _in_window(self, non_trainable: list[Any], window: tuple[int, int] | None) -> Any:
        """Boolean scalar: the current epoch lies in the inclusive window (always when None)."""
        if window is None:
            return ops.convert_to_tensor(True)
        epoch = self._read(non_trainable, self._epoch)
        return ops.logical_and(epoch >= window[0], epoch <= window[1])

    def fit(self, *args: Any, **kwargs: Any) -> Any:
        """`keras.Model.fit`, plus a callback that keeps the trainer's epoch counter current."""
        args = list(args)
        if len(args) > 5:
            args[5] = [_EpochCounter(self._epoch), *(args[5] or [])]
        else:
            kwargs["callbacks"] = [_EpochCounter(self._epoch), *(kwargs.get("callbacks") or [])]
        return super().fit(*args, **kwargs)

    # ------------------------------------------------------------ saving
    def _own_generators(self) -> list[Any]:
        """The trainer's own random generators (OGM-GE's noise, OPM's drops), in creation order
        (Keras tracks them in ``_seed_generators``)."""
        return list(getattr(self, "_seed_generators", []))

    def save_own_variables(self, store: Any) -> None:
        """The trainer's variables, plus its generators' states (Keras saves neither)."""
        super().save_own_variables(store)
        for index, generator in enumerate(self._own_generators()):
            store[f"seed_state_{index}"] = generator.state

    def load_own_variables(self, store: Any) -> None:
        """Restores what `save_own_variables` wrote; a file without generator states (older
        keras-msam) keeps the generators' initial states."""
        generators = self._own_generators()
        hidden = {f"seed_state_{i}" for i in range(len(generators))}
        super().load_own_variables(_StoreWithout(store, hidden))
        keys = set(store.keys())
        for index, generator in enumerate(generators):
            if f"seed_state_{index}" in keys:
                generator.state.assign(store[f"seed_state_{index}"])

    # ------------------------------------------------------------ forwards
    def _resolve_unimodal(self, unimodal: str) -> str:
        if unimodal not in UNIMODAL_SOURCES:
            raise ValueError(f"Unknown unimodal {unimodal!r}; use one of {UNIMODAL_SOURCES}.")
        splittable = bool(getattr(self.model, "supports_unimodal_logits", False))
        if unimodal == "split" and not splittable:
            raise ValueError(
                f"unimodal='split' needs a zoo model with linear late fusion ('concat' or "
                f"'sum'); model {self.model.name!r} has none. Use unimodal='zero_padded'."
            )
        if unimodal == "auto":
            return "split" if splittable else "zero_padded"
        return unimodal

    def _split_forward(
        self, trainable: list[Any], non_trainable: list[Any], x: Any, training: bool
    ) -> tuple[Any, Any, list[Any], list[Any]]:
        """Fused logits, per-modality logits (M, B, C) of the linear head (bias split in M
        equal parts, OGM-GE), new non-trainables and the forward's losses."""
        names = self.structure.names
        mapping = self._state_mapping(trainable, non_trainable)
        with keras.StatelessScope(state_mapping=mapping, collect_losses=True) as scope:
            features = self.model.encode(x, training=training)
            y_pred = self.model.fuse(features, training=training)
            parts = self.model.unimodal_logits(features)
            bias = ops.cast(self.model.head_bias(), "float32") / len(names)
            losses = self.losses
        new_non_trainable = [scope.get_current_value(v) for v in self.non_trainable_variables]
        unimodal = ops.stack([ops.cast(parts[name], "float32") + bias for name in names])
        return y_pred, unimodal, new_non_trainable, losses

    def _zero_padded_outputs(self, trainable: list[Any], non_trainable: list[Any], x: Any) -> Any:
        """Outputs (M, B, C) with one modality present and the others zeroed, inference mode."""
        count = len(self.structure.names)
        stacked = stack_coalitions(
            x, self.structure.names, np.eye(count, dtype=bool), self.structure.absence
        )
        outputs, _ = self.stateless_call(trainable, non_trainable, stacked, training=False)
        return ops.cast(unstack_coalitions(outputs, count), "float32")

    def _compiled_loss(
        self, x: Any, y: Any, y_pred: Any, sample_weight: Any, losses: list[Any]
    ) -> tuple[Any, Any]:
        """(scaled, unscaled) compiled loss of ``y_pred`` plus this forward's ``losses``."""
        if losses:
            self._losses_override.clear()
            self._losses_override = losses
        loss = self._compute_loss(
            x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=True
        )
        if losses:
            self._losses_override.clear()
        unscaled = loss
        if self.optimizer is not None:
            loss = self.optimizer.scale_loss(loss)
        return loss, unscaled

    def _normal_noise(
        self, non_trainable: list[Any], seed_generator: Any, shapes: list[tuple[int, ...]]
    ) -> tuple[list[Any], list[Any]]:
        """Standard normal draws of ``shapes``; the generator's state advances in the state."""
        return self._random_draws(non_trainable, seed_generator, shapes, keras.random.normal)

    def _random_draws(
        self,
        non_trainable: list[Any],
        seed_generator: Any,
        shapes: list[tuple[int, ...]],
        draw: Any = keras.random.uniform,
    ) -> tuple[list[Any], list[Any]]:
        """``draw(shape, seed=…)`` for each of ``shapes`` (uniform on [0, 1) by default); the
        generator's state advances in the step's state."""
        state = seed_generator.state
        with keras.StatelessScope(
            state_mapping=[(state, self._read(non_trainable, state))]
        ) as scope:
            noise = [draw(shape, seed=seed_generator) for shape in shapes]
            advanced = scope.get_current_value(state)
        new = list(non_trainable)
        new[self._state_index(state)] = advanced
        return noise, new

    def _scaled(self, loss: Any) -> Any:
        """A loss term scaled like the compiled loss (loss scaling under mixed precision)."""
        return self.optimizer.scale_loss(loss) if self.optimizer is not None else loss

    def _grad_groups(self) -> list[int]:
        """Per trainable variable: index of the modality owning it, or -1 (shared)."""
        return [self.structure.group_index(v) for v in self.trainable_variables]

    def _mean_metric(self, name: str) -> keras.metrics.Mean:
        return keras.metrics.Mean(name=name)
