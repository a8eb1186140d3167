"""PMR: prototypical modal rebalance (Fan et al., CVPR 2023).

Following the official code (``fanyunfeng-bit/Modal-Imbalance-PMR@3615e48``,
``main_Prototype_grad.py``: ``EU_dist``, the ``'Proto'`` branch of ``train_epoch``,
``calculate_prototype`` and the order of calls in ``main``), with φ_m modality m's (pooled)
encoder features and p_m,c its prototype of class c:

    prototypes, before training and after every epoch, in inference mode, from the first
    ⌊N_batches / 10⌋ (at least 1) batches of a shuffled pass over the training data:
        p_m,c = mean of φ_m over those examples of class c
        from the third computation on:  p ← (1 − μ)·p_new + μ·p_old        (μ = 0.2)
    per step, inside the modulation epochs (official 0–100):
        s_m = −‖φ_m − p_m,c‖₂  (B × C)         score_m = Σ_i softmax(s_m)_i,y_i
        L = L_task + Σ_m β_m·CE(s_m, y),  β_m = α for a modality whose score is below the
        highest, 0 for the highest (and for all when they tie)                 (α = 1)

For two modalities this is the official rule exactly (the ratio score_a / score_v above 1
gives the visual prototype loss weight α, below 1 the audio one). The prototypes are constant
in the step: the prototype loss trains the encoders of the weaker modalities toward their class
prototypes. The official "epoch ≤ 0" test means the first two computations (before training and
after epoch 0) are taken as they are and the momentum starts after epoch 1.

Choices and differences:

* Any M ≥ 2: every modality but the best-scoring one gets α (for M = 2 the official rule).
  BalanceBenchmark's M > 2 path (``balancemm/trainer/PMR_trainer.py``) switches to OGM-GE-style
  tanh coefficients with noise instead, a different method; not followed.
* A class absent from the prototype batches keeps its previous prototype (zeros at first); the
  official code divides by a zero count (NaN). Examples whose features are not finite (bad
  input data) are left out of the means, so one NaN never reaches every later step.
* The distance is √max(‖φ − p‖², 1e-12), so that a feature equal to its prototype has a finite
  gradient (the official √ has none there).
* Features of rank > 2 are mean-pooled over their middle axes (the official models pool).
* The prototypes are trainer state (saved); ``fit`` recomputes them from its own training
  data (arrays, a `tf.data.Dataset` or a `keras.utils.PyDataset`). A data source of unknown
  length contributes its first batch.
"""

from __future__ import annotations

import math
from typing import Any

import keras
import numpy as np
from keras import ops

from keras_msam.data_sources import concatenate_batches
from keras_msam.shapley import class_indices
from keras_msam.trainers import _checks
from keras_msam.trainers import _unimodal_heads as heads
from keras_msam.trainers._balancing import BalancingTrainer, check_window
from keras_msam.trainers.base import StepResult

_DIST_FLOOR = 1e-12


def _fail(message: str) -> ValueError:
    return ValueError(f"PMR: {message}")


def prototype_similarities(features: Any, prototypes: Any) -> Any:
    """−Euclidean distance of each example's features (B, d) to each prototype (C, d): (B, C)."""
    features = ops.cast(features, "float32")
    prototypes = ops.cast(prototypes, "float32")
    difference = ops.expand_dims(features, 1) - ops.expand_dims(prototypes, 0)
    return -ops.sqrt(ops.maximum(ops.sum(difference * difference, axis=-1), _DIST_FLOOR))


def prototype_weights(scores: Any, alpha: float) -> Any:
    """β_m = α for every modality scoring below the best one, 0 for the best (and on a tie)."""
    return alpha * ops.cast(scores < ops.max(scores), "float32")


class _Prototypes(keras.callbacks.Callback):
    """Computes the prototypes before training (if the trainer has none) and after every epoch."""

    def __init__(self, trainer: PMR, data: Any, batch_size: int | None) -> None:
        super().__init__()
        self._trainer = trainer
        self._data = data
        self._batch_size = batch_size

    def on_train_begin(self, logs: Any = None) -> None:
        if self._trainer.prototype_updates == 0:
            self._trainer.update_prototypes(*self._trainer.prototype_batches(*self._data))

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        self._trainer.update_prototypes(*self._trainer.prototype_batches(*self._data))


@keras.saving.register_keras_serializable(package="keras_msam")
class PMR(BalancingTrainer):
    """Prototypical modal rebalance on a zoo model with two or more modalities.

    Args:
        model: A zoo model (per-modality encoders, ``encode``/``fuse``) whose modalities own
            trainable variables.
        alpha: α ≥ 0, the weight of a weaker modality's prototype loss (official 1).
        momentum: μ in [0, 1), the prototypes' momentum (official ``momentum_coef`` 0.2).
        prototype_fraction: The share of the training batches (of a shuffled pass) the
            prototypes are computed from, in (0, 1] (official 0.1, at least one batch).
        modulation_epochs: Inclusive ``(start, end)`` epochs (0-based) with the prototype loss
            (official (0, 100)); None: every epoch.
        **kwargs: See `MultimodalTrainer` (Shapley logging options, ``nonfinite``, ``name``).

    Logs ``pmr_weight_<modality>`` (β_m), ``pmr_score_<modality>`` (mean true-class
    probability of the prototype classifier) and ``pmr_proto_loss_<modality>`` (CE(s_m, y)).
    """

    def __init__(
        self,
        model: keras.Model,
        alpha: float = 1.0,
        momentum: float = 0.2,
        prototype_fraction: float = 0.1,
        modulation_epochs: tuple[int, int] | None = (0, 100),
        **kwargs: Any,
    ) -> None:
        super().__init__(model, **kwargs)
        self.alpha = _checks.positive(alpha, "PMR alpha")
        self.momentum = _checks.number(momentum, "PMR momentum", 0.0)
        if self.momentum >= 1.0:
            raise _fail(f"momentum must be in [0, 1), got {momentum!r}.")
        self.prototype_fraction = _checks.number(
            prototype_fraction, "PMR prototype_fraction", 0.0, strict=True, maximum=1.0
        )
        self.modulation_epochs = check_window(modulation_epochs, "PMR modulation_epochs")
        if not heads.has_encoders(model):
            raise _fail(
                f"it needs each modality's features for its prototypes (a zoo model: "
                f"`encode(inputs)`/`fuse(features)`); model {model.name!r} has none. Wrap the "
                f"model as a zoo MultimodalClassifier."
            )
        if not any(self.structure.variable_groups.get(n) for n in self.modality_names):
            raise _fail(
                f"model {model.name!r} has no trainable modality-specific variables (e.g. early "
                "fusion of the raw inputs): the prototype loss has no encoder to train."
            )
        num_classes = self._num_classes()
        if num_classes is None or num_classes < 2:
            raise _fail(f"needs a classifier with C >= 2 classes; model {model.name!r} has "
                        f"{num_classes}.")  # fmt: skip
        widths = heads.feature_widths(self, model)
        self._prototypes = [
            self._add_state(f"pmr_prototypes_{name}", (num_classes, widths[name]))
            for name in self.modality_names
        ]
        self._updates = self._add_state("pmr_prototype_updates")
        names = self.modality_names
        self._extra_trackers = (
            [self._mean_metric(f"pmr_weight_{n}") for n in names]
            + [self._mean_metric(f"pmr_score_{n}") for n in names]
            + [self._mean_metric(f"pmr_proto_loss_{n}") for n in names]
        )

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "alpha": self.alpha,
            "momentum": self.momentum,
            "prototype_fraction": self.prototype_fraction,
            "modulation_epochs": self.modulation_epochs,
        }

    # ------------------------------------------------------------------ prototypes
    @property
    def prototype_updates(self) -> int:
        """How many times the prototypes have been computed."""
        return int(np.asarray(ops.convert_to_numpy(self._updates)))

    @property
    def prototypes(self) -> dict[str, np.ndarray]:
        """The current prototypes by modality, (C, width) each."""
        return {
            name: np.asarray(ops.convert_to_numpy(v))
            for name, v in zip(self.modality_names, self._prototypes, strict=True)
        }

    def prototype_batches(
        self, x: Any, y: Any = None, batch_size: int | None = None
    ) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """The first ⌊N·fraction⌋ (≥ 1) batches of a shuffled pass over ``(x, y)``, joined."""
        from keras.src.trainers.data_adapters import data_adapter_utils, get_data_adapter

        adapter = get_data_adapter(x, y, batch_size=batch_size or 32, shuffle=True)
        total = adapter.num_batches
        wanted = 1 if total is None else max(1, math.floor(total * self.prototype_fraction))
        xs: list[dict[str, Any]] = []
        ys: list[np.ndarray] = []
        for batch in adapter.get_numpy_iterator():
            bx, by, _ = data_adapter_utils.unpack_x_y_sample_weight(batch)
            if by is None:
                raise _fail("the training data must give labels (x, y) for the prototypes.")
            xs.append(bx)
            ys.append(np.asarray(by))
            if len(ys) >= wanted:
                break
        if not ys:
            raise _fail("the training data gave no batch to compute the prototypes from.")
        return concatenate_batches(xs), np.concatenate(ys)

    def update_prototypes(self, x: dict[str, np.ndarray], y: np.ndarray) -> None:
        """One official prototype computation from ``(x, y)`` (inference-mode features)."""
        features = self.model.encode(x, training=False)
        num_classes = int(self._prototypes[0].shape[0])
        labels = np.asarray(ops.convert_to_numpy(class_indices(y, num_classes)))
        one_hot = np.eye(num_classes, dtype=np.float64)[labels]  # (N, C)
        use_momentum = self.prototype_updates >= 2
        for name, variable in zip(self.modality_names, self._prototypes, strict=True):
            value = np.asarray(ops.convert_to_numpy(heads.pooled(features[name])), dtype=np.float64)
            finite = np.isfinite(value).all(axis=1)  # a NaN/inf example never enters a mean
            members = one_hot * finite[:, None]
            counts = members.sum(axis=0)
            old = np.asarray(ops.convert_to_numpy(variable), dtype=np.float64)
            value = np.where(finite[:, None], value, 0.0)
            new = members.T @ value / np.maximum(counts, 1)[:, None]
            new = np.where(counts[:, None] > 0, new, old)
            if use_momentum:
                new = (1 - self.momentum) * new + self.momentum * old
            variable.assign(new.astype("float32"))
        self._updates.assign(float(self.prototype_updates + 1))

    def fit(
        self, x: Any = None, y: Any = None, batch_size: int | None = None, **kwargs: Any
    ) -> Any:
        """`keras.Model.fit`, plus the prototype computations from the training data."""
        callback = _Prototypes(self, (x, y, batch_size), batch_size)
        kwargs["callbacks"] = [callback, *(kwargs.get("callbacks") or [])]
        return super().fit(x, y, batch_size, **kwargs)

    # ------------------------------------------------------------------ step
    def compute_update(
        self, trainable: list[Any], non_trainable: list[Any], x: Any, y: Any, sample_weight: Any
    ) -> StepResult:
        names = self.modality_names
        prototypes = [self._read(non_trainable, v) for v in self._prototypes]
        ready = ops.cast(self._read(non_trainable, self._updates) > 0, "float32")
        active = ops.cast(self._in_window(non_trainable, self.modulation_epochs), "float32")

        def loss_fn(weights):
            mapping = self._state_mapping(weights, non_trainable)
            with keras.StatelessScope(state_mapping=mapping, collect_losses=True) as scope:
                features = self.model.encode(x, training=True)
                y_pred = self.model.fuse(features, training=True)
                losses = self.losses
            new_nt = [scope.get_current_value(v) for v in self.non_trainable_variables]
            task, unscaled = self._compiled_loss(x, y, y_pred, sample_weight, losses)
            similarities = ops.stack(
                [
                    prototype_similarities(heads.pooled(features[n]), p)
                    for n, p in zip(names, prototypes, strict=True)
                ]
            )  # (M, B, C)
            proto_losses = heads.cross_entropies(similarities, y, sample_weight)
            probabilities = ops.softmax(ops.stop_gradient(similarities), axis=-1)
            num_classes = int(similarities.shape[-1])
            one_hot = ops.one_hot(class_indices(y, num_classes), num_classes, dtype="float32")
            scores = ops.mean(ops.sum(probabilities * one_hot[None], axis=-1), axis=1)
            weights_m = prototype_weights(scores, self.alpha) * active * ready
            total = task + self._scaled(ops.sum(weights_m * proto_losses))
            return total, (unscaled, y_pred, new_nt, weights_m, scores, proto_losses)

        (_, aux), grads = self._value_and_grad(loss_fn)(trainable)
        loss, y_pred, new_non_trainable, weights_m, scores, proto_losses = aux
        extras = {f"pmr_weight_{n}": weights_m[i] for i, n in enumerate(names)}
        extras.update({f"pmr_score_{n}": scores[i] for i, n in enumerate(names)})
        extras.update({f"pmr_proto_loss_{n}": proto_losses[i] for i, n in enumerate(names)})
        shapley = (
            self._shapley(trainable, non_trainable, x, y, y_pred) if self.log_shapley else None
        )
        return StepResult(grads, new_non_trainable, y_pred, loss, shapley, extras=extras)
