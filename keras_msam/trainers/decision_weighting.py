"""Decision-layer weighting: per-modality gains on the logit contributions of linear late fusion.

OUR design, inspired by "Revisit Modality Imbalance at the Decision Layer" (Ma & Chen,
arXiv 2510.14411; research notes, algorithms.md §4). The paper finds that a linear late-fusion
head sums *uncalibrated* modality outputs, so the decision leans on the modality whose logits
are largest, and recommends "adaptive weight allocation at the decision layer ... relative
balance according to the capabilities of each modality"; it gives no algorithm, equation or
hyperparameter. This is not a reproduction of anything in the paper.

For a model whose logits are z = Σ_m u_m + b with u_m = W_m φ_m (zoo ``concat``/``sum``
fusion), the trainer owns gains g (M × K, K = 1, or K = C with ``per_class=True``) and uses

    z = Σ_m g_m ⊙ u_m + b          in training (the loss and its gradient) and at inference.

After every training step, without gradient (o_m = u_m + b/M is OGM-GE's unimodal split):

    s_m  = mean_i |u_m,i|                     logit scale (per class k: mean_i |u_m,i,k|)
    c_m  = mean_i 1[argmax o_m,i = y_i]        capability: the split's accuracy (per class k:
                                               its recall of k), or ``true_class_prob``
    s̄_m ← μ s̄_m + (1 − μ) s_m,  c̄_m ← μ c̄_m + (1 − μ) c_m     EMAs (first value: the batch's;
                                               a class absent from the batch keeps its c̄)
    σ_m  = s̄_m / Σ_k s̄_k,  κ_m = c̄_m / Σ_k c̄_k               logit share, capability share
    g̃_m  = (κ_m / σ_m)^β                                       β = ``strength``
    g_m  = clip(g̃_m · Σ_k s̄_k / Σ_k g̃_k s̄_k, 1/G, G)          G = ``max_gain``

The gains keep the total logit scale, Σ_m g_m s̄_m = Σ_m s̄_m (before clipping): they move the
decision between modalities without changing its temperature. With β = 1 each modality's share
of the gained decision, g_m s̄_m / Σ g s̄, equals its capability share κ_m; β = 0 gives g = 1,
plain training; in between the gained share is ∝ κ_m^β σ_m^(1−β). The step uses the gains
stored before it and then stores the new ones. Training is written as
z = fuse(φ) + Σ_m (g_m − 1) ⊙ u_m, so at g = 1 the step is exactly the plain (`Joint`) step.

Why β < 1 (default 0.5). The gains act in the training forward, and the network answers them:
a gain is a reparametrisation W_m → g_m W_m, so the network can rescale its raw contributions.
With β = 1 the gained share equals κ_m whatever the raw scales, so the network can never reach
the share its loss prefers: it keeps growing the raw scale of the modality the gains damp, the
gains follow, and they run to the clipping bounds (``benchmarks/decision_weighting.py``, embedded
data: g_audio → 1/4 and g_visual → 4 on two seeds of three; test accuracy 89.7% against Joint's
97.9% on one of them). With β < 1 the gained share still moves with the raw scale (exponent
1 − β), so network and gains settle at finite gains; β = 0.5 meets the network's own share and
the capability share halfway (geometric mean). There the gains boost the weaker (visual) path in
mid-training (g_visual up to 1.3-3) and return near 1 by the end: their effect is on the
training dynamics, as a per-modality learning-rate modulation would be, more than on the final
decision.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops

from keras_msam.absence import absent_example
from keras_msam.modalities import validate_inputs
from keras_msam.shapley import class_indices
from keras_msam.trainers import _checks
from keras_msam.trainers._balancing import (
    BalancingTrainer,
    check_positive,
    true_class_probability,
)
from keras_msam.trainers.base import StepResult

CAPABILITIES = ("accuracy", "true_class_prob")
_EPS = 1e-6


def split_statistics(
    parts: Any, bias: Any, y: Any, capability: str = "accuracy", per_class: bool = False
) -> tuple[Any, Any, Any, Any]:
    """Sums of a batch's logit scale and capability per modality (and class).

    Args:
        parts: Per-modality logit contributions u_m, shape (M, B, C).
        bias: The head's shared bias (C,); the split logits are u_m + bias / M.
        y: Labels, sparse (B,) or one-hot (B, C).
        capability: ``"accuracy"`` or ``"true_class_prob"`` of the split logits.
        per_class: Statistics per class (K = C) instead of overall (K = 1).

    Returns:
        ``(scale_sum (M, K), capability_sum (M, K), counts (K,), batch)``: Σ_i of mean_c |u_m,i|
        (per class: |u_m,i,k|), Σ_i of the capability over the examples (of class k), the
        number of those examples, and B. Sums rather than means, so that replicas can add them.
    """
    parts = ops.cast(parts, "float32")
    count, num_classes = int(parts.shape[0]), int(parts.shape[-1])
    batch = ops.cast(ops.shape(parts)[1], "float32")
    logits = parts + ops.cast(bias, "float32") / count
    if capability == "accuracy":
        if num_classes == 1:
            target = ops.reshape(ops.cast(ops.convert_to_tensor(y), "float32"), (1, -1))
            score = ops.cast(ops.equal(ops.cast(logits[..., 0] > 0, "float32"), target), "float32")
        else:
            labels = ops.cast(class_indices(y, num_classes), "int32")
            predicted = ops.cast(ops.argmax(logits, axis=-1), "int32")
            score = ops.cast(ops.equal(predicted, ops.expand_dims(labels, 0)), "float32")
    elif capability == "true_class_prob":
        score = true_class_probability(logits, y, from_logits=True)
    else:
        raise ValueError(f"Unknown capability {capability!r}; use one of {CAPABILITIES}.")
    magnitude = ops.abs(parts)
    if not per_class:
        scale_sum = ops.sum(ops.mean(magnitude, axis=-1), axis=1, keepdims=True)
        capability_sum = ops.sum(score, axis=1, keepdims=True)
        counts = ops.reshape(batch, (1,))
        return scale_sum, capability_sum, counts, batch
    one_hot = ops.one_hot(class_indices(y, num_classes), num_classes, dtype="float32")
    scale_sum = ops.sum(magnitude, axis=1)
    capability_sum = ops.matmul(score, one_hot)
    counts = ops.sum(one_hot, axis=0)
    return scale_sum, capability_sum, counts, batch


def ema_update(average: Any, value: Any, present: Any, seen: Any, momentum: float) -> Any:
    """μ·average + (1 − μ)·value where ``present``; ``value`` where not yet ``seen``; else kept.

    ``present`` and ``seen`` are booleans broadcast against ``average`` (per class: (K,)).
    """
    updated = ops.where(seen, momentum * average + (1.0 - momentum) * value, value)
    return ops.where(present, updated, average)


def decision_gains(scale: Any, capability: Any, strength: float, max_gain: float) -> Any:
    """g (M, K) = clip((κ/σ)^β · Σ s / Σ (κ/σ)^β s, 1/G, G), shares taken over modalities (axis 0).

    Args:
        scale: Logit scales s̄ (M, K), ≥ 0.
        capability: Capabilities c̄ (M, K), ≥ 0.
        strength: β ≥ 0 (0: all gains 1; 1: decision shares equal capability shares).
        max_gain: G ≥ 1, the gains' clipping range [1/G, G].
    """
    scale = ops.maximum(ops.cast(scale, "float32"), _EPS)
    capability = ops.maximum(ops.cast(capability, "float32"), _EPS)
    total = ops.sum(scale, axis=0, keepdims=True)
    logit_share = scale / total
    capability_share = capability / ops.sum(capability, axis=0, keepdims=True)
    raw = ops.power(capability_share / logit_share, strength)
    gains = raw * total / ops.sum(raw * scale, axis=0, keepdims=True)
    return ops.clip(gains, 1.0 / max_gain, max_gain)


@keras.saving.register_keras_serializable(package="keras_msam")
class DecisionWeighting(BalancingTrainer):
    """Adaptive decision-layer weighting of linear late fusion (our design; see the module).

    Each modality's logit contribution u_m = W_m φ_m is multiplied by a gain g_m, trainer state
    updated every step so that the modality's share of the decision tracks its share of
    capability (the accuracy of its own split logits). The same gained fusion is used by the
    training loss and, with ``gains_at_inference`` (default), by the trainer's ``call``, so
    ``evaluate`` and ``predict`` of the trainer (and its Shapley logs) see the gained model; the
    wrapped ``model`` itself stays the plain, ungained one, and so do helpers that run
    ``trainer.model`` (`keras_msam.modality_accuracies`, `analysis.decision_layer_report`).

    Args:
        model: A model with linear late fusion (zoo ``concat``/``sum`` fusion:
            ``supports_unimodal_logits``, ``encode``, ``fuse``, ``unimodal_logits``,
            ``head_bias``), outputting logits.
        strength: β ≥ 0: 0 keeps every gain at 1 (plain training), 1 matches decision shares to
            capability shares (in training the gains then run to their clipping bounds, see the
            module), in between moves part of the way, geometrically; default 0.5.
        momentum: μ in [0, 1) of the EMAs of logit scale and capability (default 0.9).
        max_gain: G ≥ 1: gains are clipped to [1/G, G] (default 4).
        capability: ``"accuracy"`` (default, scale-free) or ``"true_class_prob"`` of each
            modality's split logits u_m + b/M.
        per_class: One gain per modality and class (class-level balance: class k's capability
            is the split's recall of k) instead of one per modality.
        gains_at_inference: Use the gains in ``call`` (``evaluate``/``predict``); False keeps the
            base behaviour (the plain model), the gains then only act in training.
        **kwargs: See `MultimodalTrainer` (Shapley logging options, ``nonfinite``, ``name``).

    Logs ``gain_<modality>`` (per class: the mean over classes) after each step.
    """

    def __init__(
        self,
        model: keras.Model,
        strength: float = 0.5,
        momentum: float = 0.9,
        max_gain: float = 4.0,
        capability: str = "accuracy",
        per_class: bool = False,
        gains_at_inference: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(model, **kwargs)
        if not bool(getattr(model, "supports_unimodal_logits", False)):
            raise ValueError(
                f"DecisionWeighting needs a model with linear late fusion (zoo 'concat' or "
                f"'sum' fusion: `supports_unimodal_logits`, `encode`, `fuse`, "
                f"`unimodal_logits`, `head_bias`); model {model.name!r} has none."
            )
        self.strength = check_positive(strength, "strength")
        momentum = check_positive(momentum, "momentum")
        if momentum >= 1.0:
            raise ValueError(f"momentum must lie in [0, 1), got {momentum!r}.")
        self.momentum = momentum
        self.max_gain = check_positive(max_gain, "max_gain")
        if self.max_gain < 1.0:
            raise ValueError(f"max_gain must be >= 1, got {max_gain!r}.")
        self.capability = _checks.choice(capability, "capability", CAPABILITIES)
        self.per_class = _checks.flag(per_class, "per_class")
        self.gains_at_inference = _checks.flag(gains_at_inference, "gains_at_inference")
        num_classes = int(ops.shape(model.head_bias())[-1])
        if self.per_class and num_classes < 2:
            raise ValueError(
                f"per_class=True needs two or more output classes; model {model.name!r} has "
                f"{num_classes}."
            )
        count = len(self.modality_names)
        width = num_classes if self.per_class else 1
        self._gains = self._add_state("gains", (count, width), 1.0)
        self._scale = self._add_state("logit_scale", (count, width))
        self._capability = self._add_state("capability", (count, width))
        self._seen = self._add_state("capability_seen", (width,))
        self._steps = self._add_state("steps")
        self._extra_trackers = [self._mean_metric(f"gain_{n}") for n in self.modality_names]

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "strength": self.strength,
            "momentum": self.momentum,
            "max_gain": self.max_gain,
            "capability": self.capability,
            "per_class": self.per_class,
            "gains_at_inference": self.gains_at_inference,
        }

    @property
    def gains(self) -> np.ndarray:
        """The current gains as numpy, (M, 1), or (M, C) with ``per_class``."""
        return np.asarray(ops.convert_to_numpy(self._gains))

    # ------------------------------------------------------------------ the gained fusion
    def _gained(self, fused: Any, parts: dict[str, Any], gains: Any) -> Any:
        """fuse(φ) + Σ_m (g_m − 1) ⊙ u_m  (= Σ_m g_m ⊙ u_m + b; exactly fuse(φ) at g = 1)."""
        gains = ops.cast(gains, fused.dtype)
        correction = None
        for index, name in enumerate(self.structure.names):
            term = (gains[index] - 1.0) * ops.cast(parts[name], fused.dtype)
            correction = term if correction is None else correction + term
        return fused + correction

    def call(self, inputs: Any, training: bool = False) -> Any:
        if not self.gains_at_inference:
            return super().call(inputs, training=training)
        validate_inputs(inputs, self.structure)
        features = self.model.encode(inputs, training=training)
        fused = self.model.fuse(features, training=training)
        return self._gained(fused, self.model.unimodal_logits(features), self._gains.value)

    def _feature_coalition_outputs(
        self, trainable: list[Any], non_trainable: list[Any], x: Any
    ) -> Any:
        """Coalition outputs of the gained fusion: Σ_m g_m ⊙ u_m(present or absent) + b."""
        if not self.gains_at_inference:
            return super()._feature_coalition_outputs(trainable, non_trainable, x)
        names = self.structure.names
        mapping = self._state_mapping(trainable, non_trainable)
        with self._no_gradient(), keras.StatelessScope(state_mapping=mapping):
            present = self.model.unimodal_logits(self.model.encode(x, training=False))
            empty = absent_example(x, names, self.structure.absence)
            absent = self.model.unimodal_logits(self.model.encode(empty, training=False))
            bias = ops.convert_to_tensor(self.model.head_bias())
            gains = ops.convert_to_tensor(self._gains.value)
        dtype = present[names[0]].dtype
        present = ops.stack([ops.cast(present[n], dtype) for n in names])  # (M, B, C)
        absent = ops.stack([ops.cast(absent[n], dtype) for n in names])  # (M, 1, C)
        keep = ops.convert_to_tensor(self._plan.masks[:, :, None, None])  # (K, M, 1, 1)
        chosen = ops.where(keep, ops.expand_dims(present, 0), ops.expand_dims(absent, 0))
        gains = ops.reshape(ops.cast(gains, dtype), (1, len(names), 1, -1))
        outputs = ops.sum(gains * chosen, axis=1) + ops.cast(bias, dtype)
        return ops.stop_gradient(outputs)

    def _gained_forward(
        self, trainable: list[Any], non_trainable: list[Any], x: Any, gains: Any
    ) -> tuple[Any, Any, Any, list[Any], list[Any]]:
        """Gained logits, contributions u (M, B, C), bias, new non-trainables and losses."""
        names = self.structure.names
        mapping = self._state_mapping(trainable, non_trainable)
        with keras.StatelessScope(state_mapping=mapping, collect_losses=True) as scope:
            features = self.model.encode(x, training=True)
            fused = self.model.fuse(features, training=True)
            parts = self.model.unimodal_logits(features)
            bias = ops.convert_to_tensor(self.model.head_bias())
            losses = self.losses
        new_non_trainable = [scope.get_current_value(v) for v in self.non_trainable_variables]
        y_pred = self._gained(fused, parts, gains)
        stacked = ops.stack([ops.cast(parts[name], "float32") for name in names])
        return y_pred, stacked, bias, new_non_trainable, losses

    # ------------------------------------------------------------------------ the step
    def compute_update(
        self, trainable: list[Any], non_trainable: list[Any], x: Any, y: Any, sample_weight: Any
    ) -> StepResult:
        if self.resolved_from_logits is False:
            raise ValueError(
                "DecisionWeighting weights logit contributions: the model must output logits "
                "(compile with a loss that has from_logits=True)."
            )
        gains = self._read(non_trainable, self._gains)

        def loss_fn(weights):
            y_pred, parts, bias, new_nt, losses = self._gained_forward(
                weights, non_trainable, x, gains
            )
            loss, unscaled = self._compiled_loss(x, y, y_pred, sample_weight, losses)
            return loss, (unscaled, y_pred, new_nt, ops.stop_gradient(parts), bias)

        (_, aux), grads = self._value_and_grad(loss_fn)(trainable)
        loss, y_pred, new_non_trainable, parts, bias = aux
        with self._no_gradient():
            scale_sum, capability_sum, counts, batch = self._cross_replica_sum(
                list(
                    split_statistics(
                        ops.stop_gradient(parts),
                        ops.stop_gradient(bias),
                        y,
                        self.capability,
                        self.per_class,
                    )
                )
            )
            steps = self._read(non_trainable, self._steps)
            seen = self._read(non_trainable, self._seen)
            present = counts > 0
            scale = ema_update(
                self._read(non_trainable, self._scale),
                scale_sum / batch,
                ops.convert_to_tensor(True),
                steps > 0,
                self.momentum,
            )
            capability = ema_update(
                self._read(non_trainable, self._capability),
                capability_sum / ops.maximum(counts, 1.0),
                present,
                seen > 0,
                self.momentum,
            )
            seen = seen + ops.cast(present, "float32")
            new_gains = ops.where(
                seen > 0,
                decision_gains(scale, capability, self.strength, self.max_gain),
                ops.ones_like(scale),
            )
            new_non_trainable = self._write(
                new_non_trainable,
                [
                    (self._gains, new_gains),
                    (self._scale, scale),
                    (self._capability, capability),
                    (self._seen, seen),
                    (self._steps, steps + 1.0),
                ],
            )
        # The full coalition may reuse this step's (gained) predictions only when the
        # coalitions are gained too.
        full = y_pred if self.gains_at_inference else None
        shapley = self._shapley(trainable, non_trainable, x, y, full) if self.log_shapley else None
        mean_gains = ops.mean(new_gains, axis=1)
        extras = {f"gain_{n}": mean_gains[i] for i, n in enumerate(self.modality_names)}
        return StepResult(list(grads), new_non_trainable, y_pred, loss, shapley, extras=extras)
