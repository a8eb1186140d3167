"""Sharpness-Aware Minimization (Foret et al., ICLR 2021) as a multimodal trainer.

g0 = ∇ℓ(θ)                      first pass, training mode (BatchNorm updated here only)
ε  = ρ · g0 / ‖g0‖₂             (or ρ · sign(g0) with norm="linf"); ε = 0 if g0 is non-finite
g1 = ∇ℓ(θ + ε)                  second pass: same dropout masks, BatchNorm updates dropped
θ ← optimizer(θ, g1)            applied once, at the original θ

ASAM (Kwon et al., ICML 2021; ``adaptive=True``, davda54/sam form without the η offset):
ε = ρ · |θ|² ⊙ g0 / ‖ |θ| ⊙ g0 ‖₂   (``norm="linf"``: ρ · |θ| ⊙ sign(g0)). ASAM's ρ is typically
about ten times SAM's (e.g. 0.5–2.0).
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from keras_msam.perturbation import NORMS, sam_perturbation
from keras_msam.trainers import _checks
from keras_msam.trainers.base import MultimodalTrainer, StepResult


def check_rho(rho: float) -> float:
    """Validates the neighbourhood radius ρ: a finite number ≥ 0 (inf and NaN are rejected)."""
    return _checks.number(rho, "rho", 0.0)


def check_norm(norm: str) -> str:
    """Validates the perturbation norm."""
    return _checks.choice(norm, "norm", NORMS)


def adaptive_perturbation(weights: list[Any], grads: list[Any], rho: float, norm: str) -> list[Any]:
    """ASAM's ascent step: T_θ ε̂ with ε̂ the SAM step of the rescaled gradient T_θ g, T_θ = |θ|.

    l2: ρ |θ|² ⊙ g / ‖ |θ| ⊙ g ‖₂;  linf: ρ |θ| ⊙ sign(g). Zero if any gradient is non-finite.
    """
    scales = [ops.abs(ops.cast(w, g.dtype)) for w, g in zip(weights, grads)]
    steps = sam_perturbation([s * g for s, g in zip(scales, grads)], rho, norm)
    return [s * e for s, e in zip(scales, steps)]


@keras.saving.register_keras_serializable(package="keras_msam")
class SAM(MultimodalTrainer):
    """SAM on a multimodal model, with keras-msam's per-modality logging.

    Args:
        model: A Keras model with dict inputs keyed by modality name.
        rho: Neighbourhood radius ρ ≥ 0 (ρ = 0 is the base optimizer's plain step).
        norm: ``"l2"`` (ε = ρ g/‖g‖₂) or ``"linf"`` (ε = ρ sign(g)).
        adaptive: ASAM: scale the ascent element-wise by |θ| (scale-invariant sharpness).
        **kwargs: See `MultimodalTrainer` (Shapley logging options, ``nonfinite``, ``name``).
    """

    has_sharpness = True

    def __init__(
        self,
        model: keras.Model,
        rho: float = 0.05,
        norm: str = "l2",
        adaptive: bool = False,
        **kwargs: Any,
    ):
        super().__init__(model, **kwargs)
        self.rho = check_rho(rho)
        self.norm = check_norm(norm)
        self.adaptive = _checks.flag(adaptive, "adaptive (True: ASAM, False: SAM)")

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "rho": self.rho,
            "norm": self.norm,
            "adaptive": self.adaptive,
        }

    def compute_update(
        self, trainable: list[Any], non_trainable: list[Any], x: Any, y: Any, sample_weight: Any
    ) -> StepResult:
        value_and_grad = self._value_and_grad(self._loss_fn)
        loss, y_pred, new_non_trainable, g0, tapped = self._first_pass(
            trainable, non_trainable, x, y, sample_weight
        )
        shapley = (
            self._shapley(trainable, non_trainable, x, y, y_pred, tapped)
            if self.log_shapley
            else None
        )
        with self._no_gradient():
            global_g0 = self._cross_replica_sum(g0)  # under tf.distribute: the all-reduced g0
            if self.adaptive:
                epsilon = adaptive_perturbation(trainable, global_g0, self.rho, self.norm)
            else:
                epsilon = sam_perturbation(global_g0, self.rho, self.norm)
            perturbed = [w + ops.cast(e, w.dtype) for w, e in zip(trainable, epsilon)]
        (_, (perturbed_loss, _, _)), g1 = value_and_grad(
            perturbed, non_trainable, x, y, sample_weight
        )
        return StepResult(list(g1), new_non_trainable, y_pred, loss, shapley, perturbed_loss - loss)
