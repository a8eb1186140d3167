"""M-SAM: Shapley-guided, modality-aware Sharpness-Aware Minimization (arXiv 2510.24919).

The reading implemented (SPEC §4), per training step:

    u(S)  = value of coalition S (modalities ∉ S zeroed), one stacked inference forward, no grad
    φ     = exact Shapley of u (sampled above the threshold);  v = relu(φ)/Σ relu(φ)
    d     = argmax v                                  dominant modality (ties → first name)
    g0    = ∇ℓ(θ)                                     first pass, training mode
    ε     = ρ · g0/‖g0‖₂  (norm="linf": ρ·sign(g0))   = ρ ∇L_d/‖∇L_d‖, L_d = v_d·ℓ
    g1    = ∇ℓ(θ + ε)                                 same dropout masks, BatchNorm frozen
    g     = v_d · g1 + (1 − v_d) · g0                 = ∇L_d(θ+ε) + ∇L_s(θ)
    θ    ← optimizer(θ, g)                            once, at the original θ

Extensions beyond the paper (labelled as such in the docs):

* ``perturb="dominant"``: ε only on the dominant modality's encoder and the shared weights.
* ``decomposition="shapley_logits"``: L_d is the cross-entropy of the dominant modality's
  Shapley logits (AGM-style, Σ_S w_d(S)·f(x_S)), so ε follows that modality's own gradient.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from keras_msam.perturbation import sam_perturbation
from keras_msam.shapley import class_indices, stack_coalitions, unstack_coalitions
from keras_msam.trainers.base import MultimodalTrainer, ShapleyResult, StepResult
from keras_msam.trainers.sam import check_norm, check_rho

PERTURB_CHOICES = ("all", "dominant")
DECOMPOSITIONS = ("loss", "shapley_logits")


@keras.saving.register_keras_serializable(package="keras_msam")
class MSAM(MultimodalTrainer):
    """Modality-aware SAM: a Shapley-weighted mix of the SAM and the plain gradient.

    Args:
        model: A Keras model with dict inputs keyed by modality name (two or more modalities).
        rho: Neighbourhood radius ρ ≥ 0 (ρ = 0 gives exactly the base optimizer's step).
        norm: ``"l2"`` or ``"linf"``.
        perturb: ``"all"`` (paper) or ``"dominant"`` (extension: the dominant modality's encoder
            and the shared weights only).
        decomposition: ``"loss"`` (paper: L_d = v_d·ℓ) or ``"shapley_logits"`` (extension).
        fixed_dominant_share: For ablations and tests: use this constant instead of v_d
            (1.0 gives SAM, 0.0 the plain step). None (default) uses the Shapley share.
        **kwargs: See `MultimodalTrainer` (``shapley_value``, ``empty_coalition``,
            ``shapley_threshold``, ``shapley_samples``, ``shapley_seed``, ``from_logits``).

    Example:
        >>> model = zoo.models.create("late_fusion_av_cnn", num_classes=10)
        >>> trainer = keras_msam.MSAM(model, rho=0.05)
        >>> trainer.compile(optimizer=keras.optimizers.SGD(1e-3, momentum=0.9),
        ...                 loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        >>> trainer.fit(train_ds, validation_data=val_ds, epochs=20)
    """

    requires_multiple_modalities = True
    has_sharpness = True

    def __init__(
        self,
        model: keras.Model,
        rho: float = 0.05,
        norm: str = "l2",
        perturb: str = "all",
        decomposition: str = "loss",
        fixed_dominant_share: float | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("log_shapley", True)
        if not kwargs["log_shapley"]:
            raise ValueError("MSAM needs the Shapley shares every step; log_shapley must be True.")
        super().__init__(model, **kwargs)
        self.rho = check_rho(rho)
        self.norm = check_norm(norm)
        if perturb not in PERTURB_CHOICES:
            raise ValueError(f"Unknown perturb {perturb!r}; use one of {PERTURB_CHOICES}.")
        if decomposition not in DECOMPOSITIONS:
            raise ValueError(
                f"Unknown decomposition {decomposition!r}; use one of {DECOMPOSITIONS}."
            )
        if fixed_dominant_share is not None and not 0.0 <= float(fixed_dominant_share) <= 1.0:
            raise ValueError(
                f"fixed_dominant_share must lie in [0, 1], got {fixed_dominant_share!r}."
            )
        self.perturb = perturb
        self.decomposition = decomposition
        self.fixed_dominant_share = (
            None if fixed_dominant_share is None else float(fixed_dominant_share)
        )

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "rho": self.rho,
            "norm": self.norm,
            "perturb": self.perturb,
            "decomposition": self.decomposition,
            "fixed_dominant_share": self.fixed_dominant_share,
        }

    def _perturbed_fraction(self, dominant: Any) -> list[Any] | None:
        """Per-variable 0/1 factor of ε for ``perturb="dominant"`` (None: perturb everything)."""
        if self.perturb == "all":
            return None
        factors = []
        for variable in self.trainable_variables:
            group = self.structure.group_index(variable)
            factors.append(1.0 if group < 0 else ops.equal(dominant, group))
        return factors

    def _dominant_shapley_loss(
        self, trainable: list[Any], non_trainable: list[Any], x: Any, y: Any
    ) -> tuple[Any, ShapleyResult]:
        """L_d: cross-entropy of the dominant modality's Shapley logits (an extension)."""
        stacked = stack_coalitions(x, self.structure.names, self._plan.masks)
        outputs, _ = self.stateless_call(trainable, non_trainable, stacked, training=False)
        outputs = ops.cast(unstack_coalitions(outputs, self._plan.num_coalitions), "float32")
        shapley = self._shapley_from_outputs(ops.stop_gradient(outputs), y)
        from_logits = self.resolved_from_logits
        logits = outputs if from_logits is not False else ops.log(ops.clip(outputs, 1e-7, 1.0))
        weights = ops.convert_to_tensor(self._plan.weights)  # (M, K)
        shapley_logits = ops.einsum("mk,kbc->mbc", weights, logits)
        dominant_logits = ops.take(shapley_logits, shapley.dominant, axis=0)
        num_classes = int(dominant_logits.shape[-1])
        if num_classes == 1:
            targets = ops.reshape(ops.cast(ops.convert_to_tensor(y), "float32"), (-1, 1))
            loss = keras.losses.binary_crossentropy(targets, dominant_logits, from_logits=True)
        else:
            loss = keras.losses.sparse_categorical_crossentropy(
                class_indices(y, num_classes), dominant_logits, from_logits=True
            )
        return ops.mean(loss), shapley

    def compute_update(
        self, trainable: list[Any], non_trainable: list[Any], x: Any, y: Any, sample_weight: Any
    ) -> StepResult:
        value_and_grad = self._value_and_grad(self._loss_fn)
        (_, (loss, y_pred, new_non_trainable)), g0 = value_and_grad(
            trainable, non_trainable, x, y, sample_weight
        )
        if self.decomposition == "loss":
            shapley = self._shapley(trainable, non_trainable, x, y, y_pred)
            ascent = g0  # ∇L_d = v_d ∇ℓ: same direction as ∇ℓ
        else:
            (_, shapley), ascent = self._value_and_grad(self._dominant_shapley_loss)(
                trainable, non_trainable, x, y
            )
        with self._no_gradient():
            epsilon = sam_perturbation(
                ascent, self.rho, self.norm, self._perturbed_fraction(shapley.dominant)
            )
            perturbed = [w + ops.cast(e, w.dtype) for w, e in zip(trainable, epsilon)]
        (_, (perturbed_loss, _, _)), g1 = value_and_grad(
            perturbed, non_trainable, x, y, sample_weight
        )
        if self.fixed_dominant_share is None:
            share = ops.take(shapley.shares, shapley.dominant)
        else:
            share = ops.convert_to_tensor(self.fixed_dominant_share, "float32")
        grads = [
            ops.cast(share, a.dtype) * a + ops.cast(1.0 - share, b.dtype) * b
            for a, b in zip(g1, g0)
        ]
        return StepResult(grads, new_non_trainable, y_pred, loss, shapley, perturbed_loss - loss)
