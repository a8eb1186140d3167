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

from keras_msam.perturbation import (
    global_norm,
    looksam_gradient,
    orthogonal_component,
    sam_perturbation,
)
from keras_msam.shapley import class_indices, stack_coalitions, unstack_coalitions
from keras_msam.trainers import _checks
from keras_msam.trainers.base import MultimodalTrainer, ShapleyResult, StepResult
from keras_msam.trainers.sam import check_norm, check_rho

PERTURB_CHOICES = ("all", "dominant")
DECOMPOSITIONS = ("loss", "shapley_logits")
LOOKSAM_SCALES = ("measured", "looksam")


@keras.saving.register_keras_serializable(package="keras_msam")
class MSAM(MultimodalTrainer):
    """Modality-aware SAM: a Shapley-weighted mix of the SAM and the plain gradient.

    Args:
        model: A Keras model with dict inputs keyed by modality name (two or more modalities).
        rho: Neighbourhood radius ρ ≥ 0 (ρ = 0 gives exactly the base optimizer's step). The
            default 0.02 is what tuning on validation chose (0.011 late, 0.023 early fusion on
            AV-Digits; docs/guides/when-msam-helps.md), not the SAM paper's 0.05.
        norm: ``"l2"`` or ``"linf"``.
        perturb: ``"all"`` (paper) or ``"dominant"`` (extension: the dominant modality's encoder
            and the shared weights only).
        decomposition: ``"loss"`` (paper: L_d = v_d·ℓ) or ``"shapley_logits"`` (extension).
        fixed_dominant_share: For ablations and tests: use this constant instead of v_d
            (1.0 gives SAM, 0.0 the plain step). None (default) uses the Shapley share.
        shapley_every: Amortisation (extension): recompute the Shapley shares every k-th step
            only and reuse the last ones in between (dominance moves slowly). 1 = every step.
        sam_every: Amortisation (extension, after LookSAM, Liu et al. CVPR 2022): take the
            full two-pass step every k-th step only. A full step stores g_v, the component of
            the SAM gradient g1 orthogonal to the plain gradient g0 (and ‖g0‖); a cheap step
            uses g1 ≈ g0 + α·(‖g0‖/r)·g_v with one gradient pass. 1 = every step.
        looksam_scale: r of the cheap steps. ``"measured"`` (default): r = ‖g0‖ of the full
            step that measured g_v, so g_v keeps its measured size relative to the gradient
            (with α = 1 the cheap step approximates the full one). ``"looksam"``: LookSAM's
            r = ‖g_v‖, the reused direction always has norm α‖g0‖ — far more than SAM adds at
            small ρ (on AV-Digits, ρ = 0.05, it stopped training: docs/guides/results.md).
        looksam_alpha: α of the cheap steps (default 1.0 with ``"measured"``, LookSAM's 0.7
            with ``"looksam"``).
        amortise_after: Warm-up of the amortisation (extension): the first ``amortise_after``
            steps are all full steps with fresh Shapley shares; ``shapley_every`` and
            ``sam_every`` apply from then on. 0 (default) amortises from the first step.
        **kwargs: See `MultimodalTrainer` (``nonfinite``, ``shapley_value``, ``empty_coalition``,
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
        rho: float = 0.02,
        norm: str = "l2",
        perturb: str = "all",
        decomposition: str = "loss",
        fixed_dominant_share: float | None = None,
        shapley_every: int = 1,
        sam_every: int = 1,
        looksam_alpha: float | None = None,
        looksam_scale: str = "measured",
        amortise_after: int = 0,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("log_shapley", True)
        if not kwargs["log_shapley"]:
            raise ValueError("MSAM needs the Shapley shares every step; log_shapley must be True.")
        super().__init__(model, **kwargs)
        self.rho = check_rho(rho)
        self.norm = check_norm(norm)
        perturb = _checks.choice(perturb, "perturb", PERTURB_CHOICES)
        decomposition = _checks.choice(decomposition, "decomposition", DECOMPOSITIONS)
        if fixed_dominant_share is not None:
            fixed_dominant_share = _checks.number(
                fixed_dominant_share, "fixed_dominant_share", 0.0, maximum=1.0
            )
        shapley_every = _checks.integer(shapley_every, "shapley_every", 1)
        sam_every = _checks.integer(sam_every, "sam_every", 1)
        if shapley_every > 1 and decomposition != "loss":
            raise ValueError("shapley_every > 1 works with decomposition='loss' only.")
        looksam_scale = _checks.choice(looksam_scale, "looksam_scale", LOOKSAM_SCALES)
        if looksam_alpha is None:
            looksam_alpha = 1.0 if looksam_scale == "measured" else 0.7
        looksam_alpha = _checks.number(looksam_alpha, "looksam_alpha", 0.0)
        amortise_after = _checks.integer(amortise_after, "amortise_after", 0)
        if amortise_after and shapley_every == 1 and sam_every == 1:
            raise ValueError(
                "amortise_after is the warm-up of amortised M-SAM: it needs shapley_every > 1 "
                f"or sam_every > 1 (got amortise_after={amortise_after} with both 1)."
            )
        self.amortise_after = amortise_after
        self.shapley_every = shapley_every
        self.sam_every = sam_every
        self.looksam_alpha = float(looksam_alpha)
        self.looksam_scale = looksam_scale
        self._create_amortisation_state()
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
            "shapley_every": self.shapley_every,
            "sam_every": self.sam_every,
            "looksam_alpha": self.looksam_alpha,
            "looksam_scale": self.looksam_scale,
            "amortise_after": self.amortise_after,
        }

    def _create_amortisation_state(self) -> None:
        """Step counter, cached shares and the LookSAM direction, as non-trainable variables.

        They live in the trainer's state (threaded on JAX, saved with the model), never in
        Python attributes mutated inside the step.
        """
        self._amortised_variables: dict[str, Any] = {}
        if self.shapley_every == 1 and self.sam_every == 1:
            return
        count = len(self.structure.names)

        def variable(name, shape, dtype="float32", initializer="zeros"):
            created = self.add_weight(
                shape=shape, dtype=dtype, initializer=initializer, trainable=False, name=name
            )
            self._amortised_variables[name] = created
            return created

        variable("amortised_step", (), "int32")
        if self.shapley_every > 1:
            variable("cached_shares", (count,), initializer=keras.initializers.Constant(1 / count))
            variable("cached_dominant", (), "int32")
        if self.sam_every > 1:
            for index, weight in enumerate(self.model.trainable_variables):
                variable(f"looksam_direction_{index}", tuple(weight.shape))
            variable("looksam_reference_norm", ())

    def _host_schedule(self) -> tuple[Any, str] | None:
        return (self._is_full_step_at, "amortised_step") if self.sam_every > 1 else None

    def _is_full_step_at(self, step: int) -> bool:
        """Host form of `_on_schedule` for ``sam_every`` (a Python step count)."""
        return step < self.amortise_after or step % self.sam_every == 0

    def _on_schedule(self, step: Any, every: int) -> Any:
        """True on the steps that are computed afresh: warm-up steps and every ``every``-th."""
        periodic = ops.equal(ops.mod(step, every), 0)
        if not self.amortise_after:
            return periodic
        return ops.logical_or(ops.less(step, self.amortise_after), periodic)

    def _state_advancing_on_skip(self) -> set[int]:
        """The amortisation schedule counts batches: its step counter advances on skipped steps
        too (the cached shares and the LookSAM direction keep their values)."""
        position = self._amortised_positions().get("amortised_step")
        return set() if position is None else {position}

    def _amortised_positions(self) -> dict[str, int]:
        """Index of each amortisation variable in ``self.non_trainable_variables``."""
        positions = {}
        for index, variable in enumerate(self.non_trainable_variables):
            for name, owned in self._amortised_variables.items():
                if variable is owned:
                    positions[name] = index
        return positions

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
        stacked = stack_coalitions(
            x, self.structure.names, self._plan.masks, self.structure.absence
        )
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
        positions = self._amortised_positions()
        state = {name: non_trainable[index] for name, index in positions.items()}
        step = state.get("amortised_step")
        value_and_grad = self._value_and_grad(self._loss_fn)
        loss, y_pred, new_non_trainable, g0, tapped = self._first_pass(
            trainable, non_trainable, x, y, sample_weight
        )
        updates: dict[str, Any] = {}
        if self.decomposition == "shapley_logits":
            (_, shapley), ascent = self._value_and_grad(self._dominant_shapley_loss)(
                trainable, non_trainable, x, y
            )
        elif self.shapley_every > 1:
            shapley = self._amortised_shapley(trainable, non_trainable, x, y, y_pred, state, tapped)
            updates["cached_shares"], updates["cached_dominant"] = shapley.shares, shapley.dominant
            ascent = g0
        else:
            shapley = self._shapley(trainable, non_trainable, x, y, y_pred, tapped)
            ascent = g0  # ∇L_d = v_d ∇ℓ: same direction as ∇ℓ

        def full_step():
            with self._no_gradient():
                # ε from the global gradient: under tf.distribute, the all-reduced one.
                epsilon = sam_perturbation(
                    self._cross_replica_sum(ascent),
                    self.rho,
                    self.norm,
                    self._perturbed_fraction(shapley.dominant),
                )
                perturbed = [w + ops.cast(e, w.dtype) for w, e in zip(trainable, epsilon)]
            (_, (perturbed_loss, _, _)), g1 = value_and_grad(
                perturbed, non_trainable, x, y, sample_weight
            )
            return list(g1), ops.cast(perturbed_loss - loss, "float32")

        if self.sam_every == 1:
            g1, sharpness = full_step()
            sharpness_weight = None
        else:
            direction = [state[f"looksam_direction_{i}"] for i in range(len(g0))]
            reference = state["looksam_reference_norm"]

            def measured():
                sam_grads, measured_sharpness = full_step()
                orthogonal = orthogonal_component(sam_grads, g0)
                return sam_grads, orthogonal, global_norm(g0), measured_sharpness, 1.0

            def reused():
                sam_grads = looksam_gradient(
                    g0,
                    direction,
                    self.looksam_alpha,
                    reference if self.looksam_scale == "measured" else None,
                )
                kept = [ops.cast(v, "float32") for v in direction]
                return sam_grads, kept, ops.cast(reference, "float32"), 0.0 * loss, 0.0

            if self._static_branch is None:
                is_full = self._on_schedule(step, self.sam_every)
                g1, direction, reference, sharpness, sharpness_weight = ops.cond(
                    is_full, measured, reused
                )
            else:  # the host picked the variant (JAX, see keras_msam/backend/jax_trainer.py)
                chosen = measured if self._static_branch else reused
                g1, direction, reference, sharpness, sharpness_weight = chosen()
                sharpness_weight = ops.convert_to_tensor(sharpness_weight, "float32")
            updates.update({f"looksam_direction_{i}": v for i, v in enumerate(direction)})
            updates["looksam_reference_norm"] = reference

        if self.fixed_dominant_share is None:
            share = ops.take(shapley.shares, shapley.dominant)
        else:
            share = ops.convert_to_tensor(self.fixed_dominant_share, "float32")
        grads = [
            ops.cast(share, a.dtype) * a + ops.cast(1.0 - share, b.dtype) * b
            for a, b in zip(g1, g0)
        ]
        if positions:
            updates["amortised_step"] = step + 1
            new_non_trainable = list(new_non_trainable)
            for name, value in updates.items():
                index = positions[name]
                new_non_trainable[index] = ops.cast(value, non_trainable[index].dtype)
        return StepResult(
            grads,
            new_non_trainable,
            y_pred,
            loss,
            shapley,
            sharpness,
            sharpness_weight=sharpness_weight,
        )

    def _amortised_shapley(
        self,
        trainable: list[Any],
        non_trainable: list[Any],
        x: Any,
        y: Any,
        y_pred: Any,
        state: dict[str, Any],
        tapped: Any = None,
    ) -> ShapleyResult:
        """Fresh Shapley shares every ``shapley_every`` steps, the cached ones in between."""

        def fresh():
            result = self._shapley(trainable, non_trainable, x, y, y_pred, tapped)
            return result.shares, ops.cast(result.dominant, "int32")

        def cached():
            return ops.cast(state["cached_shares"], "float32"), state["cached_dominant"]

        refresh = self._on_schedule(state["amortised_step"], self.shapley_every)
        shares, dominant = ops.cond(refresh, fresh, cached)
        return ShapleyResult(ops.zeros_like(shares), shares, dominant)
