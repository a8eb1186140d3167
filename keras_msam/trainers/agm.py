"""AGM: Adaptive Gradient Modulation (Li et al., ICCV 2023), following the official code.

Per training step (research notes, algorithms.md §6; official ``lihong2303/AGM``):

    f(x_S)  model output with the modalities ∉ S zeroed: the full input in training mode, the
            other coalitions in inference mode, all with gradient; f(∅) is dropped (u(∅) = 0)
    φ_m     = Σ_S w_m(S) f(x_S)                 Shapley logits; Σ_m φ_m = f(x) (M = 2:
                                                φ_a = ½[(f(a,v) − f(0,v)) + f(a,0)])
    s_m     = mean_i −log max(softmax(φ_m,i)_{y_i}, 1e-8)
    r_m     = exp(M/(M−1) · (mean_c s_c − s_m))  (M = 2: r_a = exp(s_v − s_a), official)
    r̄_m    = the same with the running means s̄ (before this batch)
    c_m     = exp(α · min(r̄_m − r_m, cap))       during the modulation epochs, else 1
    output  = Σ_m φ_m with the gradient along path m multiplied by c_m (the official backward
              hooks), written as Σ_m [c_m φ_m + (1 − c_m) stop_gradient(φ_m)]
    s̄_m    ← s̄_m (t−1)/t + s_m/t                (t counts every step, across epochs)
    if max |∇ shared kernels| > clip_norm (unscaled): clip the global gradient norm to clip_norm

The official code's settings differ per data set; each is checked against it
(``tests/test_conformance_agm.py``, lihong2303/AGM@5a65542):

    AV-MNIST   ``AGM(model, cap=None, clip_norm=1.0)``  (run/AVMNIST_main.py: no cap)
    CREMA-D    ``AGM(model, cap=10.0, clip_norm=1.0)``  (run/CREMAD_main.py; the default)
    UR-Funny   ``AGM(model, cap=7.0, clip_norm=5.0)``   (run/URFunny_main.py, three modalities)

For M > 2 the ratio form M/(M−1)·(mean − s_m) is the official UR-Funny code's (and
BalanceBenchmark's). The clipping test reads the gradients of the shared (fusion) kernels,
which for a linear late-fusion zoo model are exactly the official ``fc_out``/``head.fc``
weights (their biases are not read).
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from keras_msam.perturbation import global_norm
from keras_msam.shapley import (
    DEFAULT_NUM_SAMPLES,
    DEFAULT_THRESHOLD,
    class_indices,
    coalition_plan,
    stack_coalitions,
    unstack_coalitions,
)
from keras_msam.trainers._balancing import BalancingTrainer, check_positive, check_window
from keras_msam.trainers.base import StepResult

_MIN_PROB = 1e-8


def shapley_logits(outputs: Any, weights: Any) -> Any:
    """φ (M, B, C) = Σ_k weights[m, k] · outputs[k] for coalition outputs (K, B, C)."""
    return ops.einsum("mk,kbc->mbc", ops.cast(weights, "float32"), ops.cast(outputs, "float32"))


def agm_scores(phi: Any, y: Any) -> Any:
    """s_m = mean_i −log max(softmax(φ_m,i)_{y_i}, 1e-8), for Shapley logits (M, B, C)."""
    num_classes = int(phi.shape[-1])
    one_hot = ops.one_hot(class_indices(y, num_classes), num_classes, dtype="float32")
    prob = ops.sum(ops.softmax(ops.cast(phi, "float32"), axis=-1) * one_hot, axis=-1)
    return ops.mean(-ops.log(ops.maximum(prob, _MIN_PROB)), axis=-1)


def agm_coefficients(
    scores: Any, running_scores: Any, alpha: float, cap: float | None = 10.0
) -> Any:
    """c_m = exp(α · min(r̄_m − r_m, cap)) with r_m = exp(M/(M−1)·(mean(s) − s_m))."""
    scores = ops.cast(scores, "float32")
    running_scores = ops.cast(running_scores, "float32")
    count = int(scores.shape[0])
    factor = count / (count - 1)
    ratio = ops.exp(factor * (ops.mean(scores) - scores))
    running_ratio = ops.exp(factor * (ops.mean(running_scores) - running_scores))
    gap = running_ratio - ratio
    return ops.exp(alpha * (gap if cap is None else ops.minimum(gap, cap)))


@keras.saving.register_keras_serializable(package="keras_msam")
class AGM(BalancingTrainer):
    """AGM on any model with two or more modalities that outputs logits.

    Args:
        model: A Keras model with dict inputs keyed by modality name, outputting logits.
        alpha: Modulation strength α ≥ 0 (α = 0 is the plain gradient; official default 1.0,
            README example 2.5 on AV-MNIST).
        modulation_epochs: Inclusive ``(start, end)`` epochs (0-based) with modulation; None:
            every epoch. Default (0, 20), the official setting. Scores are tracked every step.
        clip_norm: Global-norm clip applied when a shared kernel's gradient leaves
            [−clip_norm, clip_norm] (official: 1.0; 5.0 on UR-Funny); None disables it.
        cap: Upper bound of r̄_m − r_m in the exponent (official: 10 on CREMA-D, 7 on
            UR-Funny, none on AV-MNIST); None leaves it uncapped.
        **kwargs: See `MultimodalTrainer` (``nonfinite``, ``name``...). The Shapley logits use
            exact Shapley up to ``shapley_threshold`` modalities and sampled permutations above.

    Logs ``agm_coeff_<modality>`` (c_m) and ``agm_score_<modality>`` (s_m) every step.
    """

    def __init__(
        self,
        model: keras.Model,
        alpha: float = 1.0,
        modulation_epochs: tuple[int, int] | None = (0, 20),
        clip_norm: float | None = 1.0,
        cap: float | None = 10.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(model, **kwargs)
        self.alpha = check_positive(alpha, "alpha")
        self.modulation_epochs = check_window(modulation_epochs)
        self.clip_norm = (
            None if clip_norm is None else check_positive(clip_norm, "clip_norm", False)
        )
        self.cap = None if cap is None else check_positive(cap, "cap", False)
        count = len(self.modality_names)
        self._logit_plan = coalition_plan(
            count,
            "zero",
            kwargs.get("shapley_threshold", DEFAULT_THRESHOLD),
            kwargs.get("shapley_samples", DEFAULT_NUM_SAMPLES),
            kwargs.get("shapley_seed", 0),
        )
        self._running_scores = self._add_state("running_scores", (count,))
        self._steps = self._add_state("steps")
        self._extra_trackers = [
            self._mean_metric(f"agm_coeff_{n}") for n in self.modality_names
        ] + [self._mean_metric(f"agm_score_{n}") for n in self.modality_names]

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "alpha": self.alpha,
            "modulation_epochs": self.modulation_epochs,
            "clip_norm": self.clip_norm,
            "cap": self.cap,
        }

    def compute_update(
        self, trainable: list[Any], non_trainable: list[Any], x: Any, y: Any, sample_weight: Any
    ) -> StepResult:
        if self.resolved_from_logits is False:
            raise ValueError(
                "AGM decomposes logits: the model must output logits (compile with a loss "
                "that has from_logits=True)."
            )
        names = self.structure.names
        masks = self._logit_plan.masks
        if not masks[-1].all():
            raise ValueError("internal: the full coalition must be the plan's last one.")
        running = self._read(non_trainable, self._running_scores)
        active = self._in_window(non_trainable, self.modulation_epochs)
        partial_inputs = stack_coalitions(x, names, masks[:-1], self.structure.absence)

        def loss_fn(weights):
            full, new_nt, losses = self.stateless_call(
                weights, non_trainable, x, return_losses=True, training=True
            )
            partial, _ = self.stateless_call(weights, non_trainable, partial_inputs, training=False)
            outputs = ops.concatenate(
                [
                    ops.cast(unstack_coalitions(partial, len(masks) - 1), "float32"),
                    ops.expand_dims(ops.cast(full, "float32"), 0),
                ],
                axis=0,
            )
            phi = shapley_logits(outputs, self._logit_plan.weights)
            scores = agm_scores(ops.stop_gradient(phi), y)
            coefficients = ops.where(
                active, agm_coefficients(scores, running, self.alpha, self.cap), 1.0
            )
            c = ops.reshape(ops.stop_gradient(coefficients), (-1, 1, 1))
            y_pred = ops.sum(c * phi + (1.0 - c) * ops.stop_gradient(phi), axis=0)
            loss, unscaled = self._compiled_loss(x, y, y_pred, sample_weight, losses)
            return loss, (unscaled, ops.stop_gradient(y_pred), new_nt, scores, coefficients)

        (_, aux), grads = self._value_and_grad(loss_fn)(trainable)
        loss, y_pred, new_non_trainable, scores, coefficients = aux
        with self._no_gradient():
            grads = self._clip(list(grads))
            steps = self._read(non_trainable, self._steps) + 1.0
            new_running = running * (steps - 1.0) / steps + scores / steps
            new_non_trainable = self._write(
                new_non_trainable, [(self._running_scores, new_running), (self._steps, steps)]
            )
        shapley = (
            self._shapley(trainable, non_trainable, x, y, y_pred) if self.log_shapley else None
        )
        extras = {f"agm_coeff_{n}": coefficients[i] for i, n in enumerate(names)}
        extras.update({f"agm_score_{n}": scores[i] for i, n in enumerate(names)})
        return StepResult(grads, new_non_trainable, y_pred, loss, shapley, extras=extras)

    def _clip(self, grads: list[Any]) -> list[Any]:
        """Official AGM clipping: global norm ≤ clip_norm when a shared kernel's gradient
        leaves [−clip_norm, clip_norm] (every shared gradient if no shared variable is a kernel)."""
        if self.clip_norm is None:
            return grads
        scale = 1.0 if self.optimizer is None else self.optimizer.scale_loss(1.0)
        shared = [g for g, group in zip(grads, self._grad_groups()) if group < 0]
        if not shared:
            return grads
        shared = [g for g in shared if len(g.shape) >= 2] or shared
        largest = ops.max(ops.stack([ops.max(ops.abs(ops.cast(g, "float32"))) for g in shared]))
        largest = largest / scale
        norm = global_norm(grads) / scale
        factor = ops.where(
            largest > self.clip_norm,
            ops.minimum(1.0, self.clip_norm / (norm + 1e-6)),
            ops.ones_like(norm),
        )
        return [ops.cast(ops.cast(g, "float32") * factor, g.dtype) for g in grads]
