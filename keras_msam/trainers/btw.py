"""BTW: Beyond Two-modality Weighting (Hou, Wang, Wang; Findings of EMNLP 2025, arXiv 2508.18551).

Our Keras reading of the official code (``JuneHou/Multimodal-Infomax-moe``: ``update_kl_weights``
in ``src/utils/tools.py``, ``src/solver_.py``; research notes, algorithms.md §2):

    per step (no gradient; B examples of the batch, M modalities):
        ŷ_i^m, ŷ_i   unimodal and multimodal predictions of example i (see below)
        KL_i^m  = KL(p(ŷ_i^m) ‖ q(ŷ_i)), clamped to ≥ 1e-5
                  regression:     log(σq/σp) + (σp² + (ŷ_i^m − ŷ_i)²)/(2σq²) − ½,  σp = 0.1, σq = 1
                  classification: Σ_c softmax(ŷ_i^m)_c · log(softmax(ŷ_i^m)_c / softmax(ŷ_i)_c)
        K̃_i^m  = (KL_i^m − min_j KL_j^m) / (max_j KL_j^m − min_j KL_j^m)   (1e-4 if max = min)
                  (``invert=True``: (max − KL)/(max − min), larger divergence ⇒ smaller weight)
        w_i^m   = s · K̃_i^m · MI^m + (1 − s) · w̄^m                       (EMA, reference s = 0.5)
        ŵ_i^m   = w_i^m / mean_c w_i^c                   (``normalize=True``; else ŵ = w)
        loss    = L(fuse({m: stop_gradient(ŵ_i^m) · φ_m(x_i)}), y)        the plain task loss
    every ``update_every`` epochs (reference: 5), at the end of the epoch:
        MI^m    = MI(ŷ^m, ŷ) over the validation data, clamped to ≥ 1e-5
        w̄^m    = mean weight w_i^m of the steps since the last update (initially 1)
        s_used ← s;  s ← min(s + 0.05, 1) if val_loss > best val_loss so far else max(s − 0.05, 0)

The weights are applied, as in the code (not in the loss), by scaling each modality's features
before fusion: the model needs the zoo protocol ``encode(x, training)`` → {modality: features}
and ``fuse(features, training)`` → outputs. At inference the plain model runs (w = 1).

Predictions ŷ^m, ŷ: the reference reads ŷ^m from separately trained unimodal models and ŷ from
the multimodal model at its best validation epoch. Here both come from the model being trained,
without gradient: ŷ^m is OGM-GE's split of a linear late-fusion head (zoo ``concat``/``sum``;
``unimodal="split"``: W_m φ_m + b/M on the step's training-mode features), else the model's
output with only modality m present (``"zero_padded"``, inference mode); ŷ is the unweighted
(w = 1) fused output from the same features / the same inference forward, i.e. what the model
predicts at inference.

Deviations from the code, each deliberate:

* Per batch, not per split: K̃ is min–max normalised over the batch each step (the reference
  normalises over the whole split every 5 epochs), because examples have no identity in
  ``fit``. For the same reason the EMA is kept at modality level: the "old weight" w̄^m is the
  mean weight of modality m over the steps since the last update, not each example's own.
  Weighting starts at the first step (MI = 1, w̄ = 1); the reference trains with w = 1 until its
  first update.
* σq = 1: the reference's variance estimator (an MLP on the hidden state) is trained to regress
  log σq towards 0, so σq ≈ 1 by construction; a fixed ``sigma_q`` (default 1) replaces it.
* Classification: the categorical KL(p_m ‖ p) of softmax distributions (sigmoid: Bernoulli) is
  our reading; the reference's classification variant is not public (UNVERIFIED).
* MI on validation data only: the reference computes MI and weights on the test split too and
  adapts s with the test loss (leakage). Here MI is computed from the ``validation_data``
  (or ``validation_split``) given to ``fit`` and s adapts on ``val_loss``; without validation
  data MI stays at its last value (1 initially, with a warning) and s is not adapted. Test-time
  weights are 1 (the plain model), hence ``normalize=True`` by default, so that features keep
  their scale on average between training and inference.
* MI estimator: regression uses scikit-learn's ``mutual_info_regression`` (kNN, k = 3) of ŷ^m and
  ŷ as the reference does (with ``random_state=seed``); classification uses the exact MI of the
  empirical joint distribution of the predicted classes argmax ŷ^m and argmax ŷ
  (``sklearn.metrics.mutual_info_score``, nats): the information the modality's decision shares
  with the multimodal decision.
* s lags one update, as in the code: the weights of the period after update k use the s adjusted
  at update k − 1 (the code computes the new weights with s, then adjusts s).
* Weights scale the encoders' outputs (the fusion head's inputs); the reference scales 128-d
  projections of them in front of its MoE fusion transformer.

Scikit-learn is needed (at ``fit`` time, with validation data) for the MI.
"""

from __future__ import annotations

import warnings
from typing import Any

import keras
import numpy as np
from keras import ops

from keras_msam.absence import map_leaves
from keras_msam.shapley import stack_coalitions, unstack_coalitions
from keras_msam.trainers import _checks
from keras_msam.trainers._balancing import (
    BalancingTrainer,
    check_positive,
    scale_features,
    split_off_validation,
)
from keras_msam.trainers.base import StepResult

TASKS = ("classification", "regression")
MIN_DIVERGENCE = 1e-5
MIN_MI = 1e-5
DEGENERATE_WEIGHT = 1e-4
_MIN_PROB = 1e-7


# ------------------------------------------------------------------ the method's equations
def _log_probabilities(outputs: Any, from_logits: bool) -> Any:
    """log p over classes (..., C); one output unit is a Bernoulli (2 classes)."""
    outputs = ops.cast(outputs, "float32")
    if int(outputs.shape[-1]) == 1:
        if from_logits:
            outputs = ops.concatenate([ops.zeros_like(outputs), outputs], axis=-1)
        else:
            outputs = ops.concatenate([1.0 - outputs, outputs], axis=-1)
    if from_logits:
        return ops.log_softmax(outputs, axis=-1)
    return ops.log(ops.clip(outputs, _MIN_PROB, 1.0))


def categorical_kl(unimodal: Any, multimodal: Any, from_logits: bool = True) -> Any:
    """KL(p_m ‖ p) (M, B) of unimodal outputs (M, B, C) against multimodal outputs (B, C)."""
    log_p_m = _log_probabilities(unimodal, from_logits)
    log_p = ops.expand_dims(_log_probabilities(multimodal, from_logits), 0)
    return ops.sum(ops.exp(log_p_m) * (log_p_m - log_p), axis=-1)


def gaussian_kl(unimodal: Any, multimodal: Any, sigma_p: float = 0.1, sigma_q: float = 1.0) -> Any:
    """KL(N(ŷ_m, σp²) ‖ N(ŷ, σq²)) (M, B), summed over output units, of (M, B, D) and (B, D)."""
    unimodal = ops.cast(unimodal, "float32")
    multimodal = ops.expand_dims(ops.cast(multimodal, "float32"), 0)
    per_unit = (
        np.log(sigma_q / sigma_p)
        + (sigma_p**2 + ops.square(unimodal - multimodal)) / (2.0 * sigma_q**2)
        - 0.5
    )
    return ops.sum(per_unit, axis=-1)


def instance_divergence(
    unimodal: Any,
    multimodal: Any,
    task: str = "classification",
    from_logits: bool = True,
    sigma_p: float = 0.1,
    sigma_q: float = 1.0,
) -> Any:
    """KL_i^m (M, B), clamped to ≥ 1e-5 as in the reference."""
    if task == "regression":
        kl = gaussian_kl(unimodal, multimodal, sigma_p, sigma_q)
    else:
        kl = categorical_kl(unimodal, multimodal, from_logits)
    return ops.maximum(kl, MIN_DIVERGENCE)


def minmax_normalise(kl: Any, invert: bool = False) -> Any:
    """K̃ (M, B): per modality, (KL − min)/(max − min) over the batch; 1e-4 where max = min.

    ``invert``: (max − KL)/(max − min), so the most divergent example gets the smallest weight.
    """
    kl = ops.cast(kl, "float32")
    low = ops.min(kl, axis=-1, keepdims=True)
    high = ops.max(kl, axis=-1, keepdims=True)
    spread = high - low
    numerator = (high - kl) if invert else (kl - low)
    scaled = numerator / ops.maximum(spread, 1e-30)
    return ops.where(spread > 0, scaled, DEGENERATE_WEIGHT * ops.ones_like(kl))


def btw_weights(
    normalised: Any, mi: Any, running: Any, smoothing: Any, normalize: bool = True
) -> tuple[Any, Any]:
    """(w, ŵ), both (M, B): w = s·K̃·MI + (1 − s)·w̄ and the applied ŵ = w / mean_m w (or w)."""
    normalised = ops.cast(normalised, "float32")
    mi = ops.reshape(ops.cast(mi, "float32"), (-1, 1))
    running = ops.reshape(ops.cast(running, "float32"), (-1, 1))
    smoothing = ops.cast(smoothing, "float32")
    raw = smoothing * normalised * mi + (1.0 - smoothing) * running
    if not normalize:
        return raw, raw
    mean = ops.mean(raw, axis=0, keepdims=True)
    return raw, raw / ops.maximum(mean, 1e-12)


def adapt_smoothing(smoothing: float, loss: float, best: float, step: float = 0.05) -> float:
    """The reference's rule: s + step (capped at 1) if ``loss`` > ``best`` so far, else s − step
    (floored at 0)."""
    if loss > best:
        return min(smoothing + step, 1.0)
    return max(smoothing - step, 0.0)


def predicted_classes(outputs: np.ndarray, from_logits: bool = True) -> np.ndarray:
    """argmax over classes (N,) of outputs (..., N, C); one output unit: > 0 (logit) or > ½."""
    outputs = np.asarray(outputs)
    if outputs.shape[-1] == 1:
        return (outputs[..., 0] > (0.0 if from_logits else 0.5)).astype(np.int64)
    return np.argmax(outputs, axis=-1)


def modality_mutual_information(
    unimodal: np.ndarray,
    multimodal: np.ndarray,
    task: str = "classification",
    from_logits: bool = True,
    seed: int | None = 0,
) -> np.ndarray:
    """MI^m (M,) between unimodal (M, N, C) and multimodal (N, C) predictions, clamped ≥ 1e-5.

    Regression (C = 1): ``mutual_info_regression(ŷ^m, ŷ, random_state=seed)`` (the reference).
    Classification: ``mutual_info_score`` of the predicted classes (exact, in nats).
    """
    try:
        from sklearn.feature_selection import mutual_info_regression
        from sklearn.metrics import mutual_info_score
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError(
            "BTW computes the modality-level mutual information with scikit-learn: "
            "pip install scikit-learn"
        ) from error
    unimodal = np.asarray(unimodal, dtype=np.float64)
    multimodal = np.asarray(multimodal, dtype=np.float64)
    values = []
    if task == "regression":
        target = multimodal.reshape(len(multimodal), -1)[:, 0]
        for prediction in unimodal:
            feature = prediction.reshape(len(prediction), -1)[:, :1]
            values.append(mutual_info_regression(feature, target, random_state=seed)[0])
    else:
        target = predicted_classes(multimodal, from_logits)
        for prediction in unimodal:
            values.append(mutual_info_score(target, predicted_classes(prediction, from_logits)))
    return np.maximum(np.asarray(values, dtype=np.float64), MIN_MI)


# ---------------------------------------------------------------------------- the trainer
class _BTWUpdate(keras.callbacks.Callback):
    """At the end of every ``update_every``-th epoch: MI from validation data, w̄ and s."""

    def __init__(self, trainer: BTW, validation_data: Any, batch_size: int | None, steps: Any):
        super().__init__()
        self._trainer = trainer
        self._validation_data = validation_data
        self._batch_size = batch_size
        self._steps = steps

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        self._trainer._end_of_epoch(
            epoch, dict(logs or {}), self._validation_data, self._batch_size, self._steps
        )


@keras.saving.register_keras_serializable(package="keras_msam")
class BTW(BalancingTrainer):
    """BTW instance- and modality-level weighting of features, for any number of modalities.

    Args:
        model: A model with dict inputs keyed by modality name and the zoo protocol
            ``encode(x, training)`` → {modality: features}, ``fuse(features, training)`` →
            outputs (`zoo.models.MultimodalClassifier`).
        task: ``"classification"`` (categorical KL, MI of predicted classes) or
            ``"regression"`` (Gaussian KL, kNN MI; one output unit).
        update_every: Epochs between updates of MI, w̄ and s (reference: 5).
        smoothing: Initial s of the EMA (reference: 0.5), in [0, 1].
        smoothing_step: Change of s per update (reference: 0.05).
        invert: Larger divergence ⇒ smaller weight. False (default) is the reference direction.
        normalize: Divide each example's weights by their mean over modalities (default), so
            features keep their scale on average; inference uses w = 1.
        sigma_p: Standard deviation of the unimodal predictive Gaussian in the regression KL
            (reference 0.1).
        sigma_q: Standard deviation of the multimodal one (reference ≈ 1).
        unimodal: ``"auto"`` (the head split for linear late fusion, else zero-padded outputs),
            ``"split"`` or ``"zero_padded"``.
        seed: ``random_state`` of the kNN MI estimator (regression).
        **kwargs: See `MultimodalTrainer` (Shapley logging options, ``nonfinite``, ``name``).

    Logs ``btw_weight_<modality>`` (batch mean of the applied weight ŵ) and ``btw_mi_<modality>``
    (MI^m in use) every training step. ``fit`` adds the callback that updates MI, w̄ and s.
    """

    def __init__(
        self,
        model: keras.Model,
        task: str = "classification",
        update_every: int = 5,
        smoothing: float = 0.5,
        smoothing_step: float = 0.05,
        invert: bool = False,
        normalize: bool = True,
        sigma_p: float = 0.1,
        sigma_q: float = 1.0,
        unimodal: str = "auto",
        seed: int | None = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(model, **kwargs)
        if not (
            callable(getattr(model, "encode", None)) and callable(getattr(model, "fuse", None))
        ):
            raise ValueError(
                f"BTW scales each modality's features before fusion and needs a model with "
                f"per-modality encoders: `encode(inputs, training)` -> {{modality: features}} "
                f"and `fuse(features, training)` -> outputs (the zoo protocol, e.g. "
                f"zoo.models.MultimodalClassifier); model {model.name!r} has neither."
            )
        self.task = _checks.choice(task, "task", TASKS)
        self.update_every = _checks.integer(update_every, "update_every", 1)
        self.smoothing = check_positive(smoothing, "smoothing")
        if self.smoothing > 1:
            raise ValueError(f"smoothing (s) must lie in [0, 1], got {smoothing!r}.")
        self.smoothing_step = check_positive(smoothing_step, "smoothing_step")
        self.invert = _checks.flag(invert, "invert")
        self.normalize = _checks.flag(normalize, "normalize")
        self.sigma_p = check_positive(sigma_p, "sigma_p", allow_zero=False)
        self.sigma_q = check_positive(sigma_q, "sigma_q", allow_zero=False)
        self.unimodal = unimodal
        self._source = self._resolve_unimodal(unimodal)
        self.seed = _checks.optional_integer(seed, "seed", 0)
        count = len(self.modality_names)
        self._mi = self._add_state("mi", (count,), 1.0)
        self._running_weight = self._add_state("running_weight", (count,), 1.0)
        self._weight_sum = self._add_state("weight_sum", (count,))
        self._weight_steps = self._add_state("weight_steps")
        self._smoothing = self._add_state("smoothing", (), self.smoothing)
        self._next_smoothing = self._add_state("next_smoothing", (), self.smoothing)
        self._best_loss = self._add_state("best_val_loss", (), float("inf"))
        self._warned_no_validation = False
        self._extra_trackers = [
            self._mean_metric(f"btw_weight_{n}") for n in self.modality_names
        ] + [self._mean_metric(f"btw_mi_{n}") for n in self.modality_names]

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "task": self.task,
            "update_every": self.update_every,
            "smoothing": self.smoothing,
            "smoothing_step": self.smoothing_step,
            "invert": self.invert,
            "normalize": self.normalize,
            "sigma_p": self.sigma_p,
            "sigma_q": self.sigma_q,
            "unimodal": self.unimodal,
            "seed": self.seed,
        }

    # ------------------------------------------------------------------ predictions
    def _from_logits(self) -> bool:
        return self._source == "split" or self.resolved_from_logits is not False

    def _check_outputs(self, outputs: Any) -> None:
        if self.task == "regression" and int(outputs.shape[-1]) != 1:
            raise ValueError(
                f"BTW with task='regression' needs one output unit; model {self.model.name!r} "
                f"has {int(outputs.shape[-1])}."
            )

    def _inference_predictions(
        self, trainable: list[Any], non_trainable: list[Any], x: Any
    ) -> tuple[Any, Any]:
        """Unimodal (M, B, C) and multimodal (B, C) predictions in inference mode, no gradient."""
        names = self.structure.names
        count = len(names)
        if self._source == "split":
            mapping = self._state_mapping(trainable, non_trainable)
            with self._no_gradient(), keras.StatelessScope(state_mapping=mapping):
                features = self.model.encode(x, training=False)
                multimodal = self.model.fuse(features, training=False)
                unimodal = self._split_logits(features)
        else:
            masks = np.concatenate([np.eye(count, dtype=bool), np.ones((1, count), bool)])
            with self._no_gradient():
                outputs, _ = self.stateless_call(
                    trainable,
                    non_trainable,
                    stack_coalitions(x, names, masks, self.structure.absence),
                    training=False,
                )
            outputs = ops.cast(unstack_coalitions(outputs, count + 1), "float32")
            unimodal, multimodal = outputs[:count], outputs[count]
        return (
            ops.stop_gradient(ops.cast(unimodal, "float32")),
            ops.stop_gradient(ops.cast(multimodal, "float32")),
        )

    def _split_logits(self, features: dict[str, Any]) -> Any:
        """OGM-GE's split (M, B, C): W_m φ_m + b/M of a linear late-fusion head."""
        names = self.structure.names
        parts = self.model.unimodal_logits(features)
        bias = ops.cast(self.model.head_bias(), "float32") / len(names)
        return ops.stack([ops.cast(parts[name], "float32") + bias for name in names])

    def instance_weights(
        self, unimodal: Any, multimodal: Any, mi: Any, running: Any, smoothing: Any
    ) -> tuple[Any, Any]:
        """(w, ŵ) (M, B) of a batch from its unimodal and multimodal predictions."""
        kl = instance_divergence(
            unimodal, multimodal, self.task, self._from_logits(), self.sigma_p, self.sigma_q
        )
        return btw_weights(
            minmax_normalise(kl, self.invert), mi, running, smoothing, self.normalize
        )

    # ------------------------------------------------------------------------- step
    def compute_update(
        self, trainable: list[Any], non_trainable: list[Any], x: Any, y: Any, sample_weight: Any
    ) -> StepResult:
        names = self.structure.names
        split = self._source == "split"
        mi = self._read(non_trainable, self._mi)
        running = self._read(non_trainable, self._running_weight)
        smoothing = self._read(non_trainable, self._smoothing)
        if not split:
            unimodal, multimodal = self._inference_predictions(trainable, non_trainable, x)
            self._check_outputs(multimodal)

        def loss_fn(variables):
            mapping = list(zip(self.trainable_variables, variables)) + list(
                zip(self.non_trainable_variables, non_trainable)
            )
            with keras.StatelessScope(state_mapping=mapping, collect_losses=True) as scope:
                features = self.model.encode(x, training=True)
                if split:
                    frozen = {name: ops.stop_gradient(features[name]) for name in names}
                    with self._no_gradient(), keras.StatelessScope(state_mapping=mapping):
                        plain = ops.stop_gradient(
                            ops.cast(self.model.fuse(frozen, training=False), "float32")
                        )
                        parts = ops.stop_gradient(self._split_logits(frozen))
                    self._check_outputs(plain)
                else:
                    plain, parts = multimodal, unimodal
                raw, applied = self.instance_weights(parts, plain, mi, running, smoothing)
                raw, applied = ops.stop_gradient(raw), ops.stop_gradient(applied)
                scaled = scale_features(features, names, applied)
                y_pred = self.model.fuse(scaled, training=True)
                losses = self.losses
            new_nt = [scope.get_current_value(v) for v in self.non_trainable_variables]
            loss, unscaled = self._compiled_loss(x, y, y_pred, sample_weight, losses)
            return loss, (unscaled, y_pred, new_nt, raw, applied, plain)

        (_, aux), grads = self._value_and_grad(loss_fn)(trainable)
        loss, y_pred, new_non_trainable, raw, applied, plain = aux
        with self._no_gradient():
            batch_means = ops.mean(raw, axis=-1)
            new_non_trainable = self._write(
                new_non_trainable,
                [
                    (self._weight_sum, self._read(non_trainable, self._weight_sum) + batch_means),
                    (self._weight_steps, self._read(non_trainable, self._weight_steps) + 1.0),
                ],
            )
            applied_means = ops.mean(applied, axis=-1)
        shapley = self._shapley(trainable, non_trainable, x, y, plain) if self.log_shapley else None
        extras = {f"btw_weight_{n}": applied_means[i] for i, n in enumerate(names)}
        extras.update({f"btw_mi_{n}": ops.cast(mi[i], "float32") for i, n in enumerate(names)})
        return StepResult(list(grads), new_non_trainable, y_pred, loss, shapley, extras=extras)

    # ------------------------------------------------------------------ epoch updates
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
        """`keras.Model.fit`, plus the callback that updates MI (from the validation data), w̄
        and s every ``update_every`` epochs (and the epoch counter)."""
        x, y, validation_data = split_off_validation(
            x, y, validation_split, validation_data, kwargs
        )
        update = _BTWUpdate(
            self,
            validation_data,
            kwargs.get("validation_batch_size") or batch_size,
            kwargs.get("validation_steps"),
        )
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

    def update_callback(
        self, validation_data: Any = None, batch_size: int | None = None, steps: Any = None
    ) -> keras.callbacks.Callback:
        """The epoch-end callback `fit` adds (for custom loops that drive callbacks by hand)."""
        return _BTWUpdate(self, validation_data, batch_size, steps)

    def validation_predictions(
        self, validation_data: Any, batch_size: int | None = None, steps: Any = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Unimodal (M, N, C) and multimodal (N, C) inference predictions over the data."""
        from keras.src.trainers.data_adapters import data_adapter_utils, get_data_adapter

        if isinstance(validation_data, (tuple, list)):
            vx, vy, vw = data_adapter_utils.unpack_x_y_sample_weight(validation_data)
        else:
            vx, vy, vw = validation_data, None, None
        adapter = get_data_adapter(
            vx, vy, vw, batch_size=batch_size or 32, steps_per_epoch=steps, shuffle=False
        )
        trainable = [v.value for v in self.trainable_variables]
        non_trainable = [v.value for v in self.non_trainable_variables]
        unimodal, multimodal = [], []
        for index, batch in enumerate(adapter.get_numpy_iterator()):
            if steps is not None and index >= steps:
                break
            bx, _, _ = data_adapter_utils.unpack_x_y_sample_weight(batch)
            bx = {
                name: map_leaves(ops.convert_to_tensor, bx[name]) for name in self.structure.names
            }
            u, m = self._inference_predictions(trainable, non_trainable, bx)
            unimodal.append(np.asarray(ops.convert_to_numpy(u)))
            multimodal.append(np.asarray(ops.convert_to_numpy(m)))
        if not multimodal:
            raise ValueError("BTW: the validation data gave no batch to compute MI on.")
        return np.concatenate(unimodal, axis=1), np.concatenate(multimodal, axis=0)

    def _end_of_epoch(
        self,
        epoch: int,
        logs: dict[str, Any],
        validation_data: Any,
        batch_size: int | None,
        steps: Any,
    ) -> None:
        """The reference's update every ``update_every`` epochs, and the best val_loss."""
        val_loss = logs.get("val_loss")
        best = float(np.asarray(ops.convert_to_numpy(self._best_loss)))
        if (epoch + 1) % self.update_every == 0:
            if validation_data is not None:
                unimodal, multimodal = self.validation_predictions(
                    validation_data, batch_size, steps
                )
                self._check_outputs(multimodal)
                mi = modality_mutual_information(
                    unimodal, multimodal, self.task, self._from_logits(), self.seed
                )
                self._mi.assign(mi.astype("float32"))
            elif not self._warned_no_validation:
                warnings.warn(
                    "BTW computes the modality-level MI from validation data, and fit got none "
                    "(validation_data / validation_split): MI stays at its current value (1 "
                    "initially) and the smoothing factor s is not adapted.",
                    stacklevel=2,
                )
                self._warned_no_validation = True
            steps_done = float(np.asarray(ops.convert_to_numpy(self._weight_steps)))
            if steps_done > 0:
                total = np.asarray(ops.convert_to_numpy(self._weight_sum))
                self._running_weight.assign((total / steps_done).astype("float32"))
            self._weight_sum.assign(np.zeros(self._weight_sum.shape, "float32"))
            self._weight_steps.assign(0.0)
            pending = float(np.asarray(ops.convert_to_numpy(self._next_smoothing)))
            self._smoothing.assign(pending)
            if val_loss is not None:
                self._next_smoothing.assign(
                    adapt_smoothing(pending, float(val_loss), best, self.smoothing_step)
                )
        if val_loss is not None and float(val_loss) < best:
            self._best_loss.assign(float(val_loss))
