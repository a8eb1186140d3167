"""MWAM: Modality Weighting with the Frequency Ratio Metric (Lu et al., ICLR 2026, 2602.22644).

Per training step (research notes, algorithms.md §3):

    F_m   = FRM(x_m)                                   block DCT 8×8, q = 2, on the raw inputs
    F̂_m  = F_m on the first step, else ω F̂_m + (1 − ω) F_m          EMA bank, ω = 0.5 (Eq. 2)
    T_m   = F̂_m / (mean_c F̂_c + σ)                                   (Eq. 6, smoothed values)
    K_m   = α − β · sigmoid(λ (T_m − γ))              (α, β, λ, γ) = (1.5, 1, 6, 0.7) (Eq. 5)
    "gradient": ∇θ_m ← K_m ∇θ_m for each modality's encoder; shared weights unscaled
    "loss":     L = CE(f(x), y) + Σ_m K_m CE(aux_m, y)                 (Eq. 7)
    "hybrid":   both (the paper's best, Table 5; our default)

Auxiliary predictions aux_m: the paper's models have unimodal heads; here they are the OGM-GE
split of a linear late-fusion head (zoo ``concat``/``sum``), else the model's output with only
modality m present (zeros elsewhere, inference mode, with gradient). The bank lives in
non-trainable variables of the trainer. At inference MWAM is detached (the plain model).

Extensions (labelled): ``frm_reduction="mean"`` (default; ``"sum"`` is the paper) makes FRMs of
inputs of different sizes comparable; 1-D/sequence inputs use the 1-D block DCT (see
`keras_msam.analysis.frequency_ratio`); a modality of several inputs (``{"token_ids",
"padding_mask"}``) takes the mean FRM of its inputs other than masks.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from keras_msam.absence import leaf_paths, leaves
from keras_msam.analysis.frequency import REDUCTIONS, frequency_ratio, frm_weights
from keras_msam.shapley import class_indices
from keras_msam.trainers import _checks
from keras_msam.trainers._balancing import BalancingTrainer, check_positive
from keras_msam.trainers.base import StepResult

INTERVENTIONS = ("gradient", "loss", "hybrid")


@keras.saving.register_keras_serializable(package="keras_msam")
class MWAM(BalancingTrainer):
    """MWAM/FRM modality weighting on any model with two or more modalities.

    Args:
        model: A Keras model with dict inputs keyed by modality name.
        intervention: ``"gradient"`` (encoder gradient editing), ``"loss"`` (weighted auxiliary
            unimodal losses) or ``"hybrid"`` (both).
        alpha: α of the weight function K = α − β·sigmoid(λ(T − γ)) (paper 1.5).
        beta: β of the weight function (paper 1).
        lam: λ of the weight function (paper 6).
        gamma: γ of the weight function (paper 0.7).
        momentum: ω of the FRM bank (paper 0.5).
        block_size: DCT block p (paper 8).
        keep: Low/high-frequency corner q (paper 2).
        sigma: σ of the FRM and of T (paper code 1e-6).
        frm_reduction: ``"mean"`` (extension, default) or ``"sum"`` (paper).
        unimodal: Auxiliary predictions: ``"auto"``, ``"split"`` or ``"zero_padded"``.
        **kwargs: See `MultimodalTrainer` (Shapley logging options, ``nonfinite``).

    Logs ``mwam_weight_<modality>`` (K_m) and ``mwam_frm_<modality>`` (F̂_m) every step.
    """

    def __init__(
        self,
        model: keras.Model,
        intervention: str = "hybrid",
        alpha: float = 1.5,
        beta: float = 1.0,
        lam: float = 6.0,
        gamma: float = 0.7,
        momentum: float = 0.5,
        block_size: int = 8,
        keep: int = 2,
        sigma: float = 1e-6,
        frm_reduction: str = "mean",
        unimodal: str = "auto",
        **kwargs: Any,
    ) -> None:
        super().__init__(model, **kwargs)
        self.intervention = _checks.choice(intervention, "intervention", INTERVENTIONS)
        frm_reduction = _checks.choice(frm_reduction, "frm_reduction", REDUCTIONS)
        self.alpha = check_positive(alpha, "alpha")
        self.beta = check_positive(beta, "beta")
        self.lam = check_positive(lam, "lam")
        self.gamma = _checks.number(gamma, "gamma", None)
        if not self.alpha - self.beta >= 0:
            raise ValueError(
                f"alpha - beta must be >= 0 (weights lie in (alpha - beta, alpha)); got "
                f"alpha={alpha!r}, beta={beta!r}."
            )
        self.momentum = check_positive(momentum, "momentum")
        if self.momentum >= 1:
            raise ValueError(f"momentum (ω) must lie in [0, 1), got {momentum!r}.")
        block_size = _checks.integer(block_size, "block_size", 2)
        keep = _checks.integer(keep, "keep", 1)
        if not keep <= block_size // 2:
            raise ValueError(
                f"Need block_size >= 2 and 1 <= keep <= block_size // 2, got block_size="
                f"{block_size!r}, keep={keep!r}."
            )
        self.block_size, self.keep = int(block_size), int(keep)
        self.sigma = check_positive(sigma, "sigma")
        self.frm_reduction = frm_reduction
        self.unimodal = unimodal
        self._source = self._resolve_unimodal(unimodal)
        count = len(self.modality_names)
        self._bank = self._add_state("frm_bank", (count,))
        self._steps = self._add_state("steps")
        self._extra_trackers = [
            self._mean_metric(f"mwam_weight_{n}") for n in self.modality_names
        ] + [self._mean_metric(f"mwam_frm_{n}") for n in self.modality_names]

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "intervention": self.intervention,
            "alpha": self.alpha,
            "beta": self.beta,
            "lam": self.lam,
            "gamma": self.gamma,
            "momentum": self.momentum,
            "block_size": self.block_size,
            "keep": self.keep,
            "sigma": self.sigma,
            "frm_reduction": self.frm_reduction,
            "unimodal": self.unimodal,
        }

    def modality_weights(self, frm: Any) -> Any:
        """K (M,) from smoothed FRMs (M,)."""
        return frm_weights(frm, self.alpha, self.beta, self.lam, self.gamma, self.sigma)

    def _aux_loss(self, unimodal: Any, y: Any, weights: Any, from_logits: bool) -> Any:
        """Σ_m K_m · mean CE(aux_m, y) for auxiliary outputs (M, B, C)."""
        num_classes = int(unimodal.shape[-1])
        total = 0.0
        for index in range(int(unimodal.shape[0])):
            if num_classes == 1:
                target = ops.reshape(ops.cast(ops.convert_to_tensor(y), "float32"), (-1, 1))
                ce = keras.losses.binary_crossentropy(
                    target, unimodal[index], from_logits=from_logits
                )
            else:
                ce = keras.losses.sparse_categorical_crossentropy(
                    class_indices(y, num_classes), unimodal[index], from_logits=from_logits
                )
            total = total + weights[index] * ops.mean(ce)
        return total

    def _modality_frm(self, value: Any) -> Any:
        """FRM of one modality's raw input; for a modality of several inputs, the mean FRM of
        its inputs other than masks (e.g. a text's token ids, read as a 1-D signal)."""
        if isinstance(value, dict):
            paths, signals = leaf_paths(value), leaves(value)
            kept = [v for p, v in zip(paths, signals) if not str(p[-1]).lower().endswith("mask")]
            return ops.mean(ops.stack([self._modality_frm(v) for v in kept or signals]))
        signal = ops.cast(ops.stop_gradient(ops.convert_to_tensor(value)), "float32")
        return frequency_ratio(signal, self.block_size, self.keep, self.sigma, self.frm_reduction)

    def compute_update(
        self, trainable: list[Any], non_trainable: list[Any], x: Any, y: Any, sample_weight: Any
    ) -> StepResult:
        names = self.structure.names
        with self._no_gradient():
            frm = ops.stack([self._modality_frm(x[name]) for name in names])
            bank = self._read(non_trainable, self._bank)
            steps = self._read(non_trainable, self._steps)
            smoothed = ops.where(steps > 0, self.momentum * bank + (1.0 - self.momentum) * frm, frm)
            weights = ops.stop_gradient(self.modality_weights(smoothed))
        use_loss = self.intervention in ("loss", "hybrid")
        split = self._source == "split"

        def loss_fn(variables):
            if use_loss and split:
                y_pred, unimodal, new_nt, losses = self._split_forward(
                    variables, non_trainable, x, training=True
                )
            else:
                y_pred, new_nt, losses = self.stateless_call(
                    variables, non_trainable, x, return_losses=True, training=True
                )
                unimodal = (
                    self._zero_padded_outputs(variables, non_trainable, x) if use_loss else None
                )
            loss, unscaled = self._compiled_loss(x, y, y_pred, sample_weight, losses)
            if use_loss:
                from_logits = split or self.resolved_from_logits is not False
                aux = self._aux_loss(unimodal, y, weights, from_logits)
                if self.optimizer is not None:
                    aux = self.optimizer.scale_loss(aux)
                loss = loss + ops.cast(aux, loss.dtype)
            return loss, (unscaled, y_pred, new_nt)

        (_, (loss, y_pred, new_non_trainable)), grads = self._value_and_grad(loss_fn)(trainable)
        with self._no_gradient():
            if self.intervention in ("gradient", "hybrid"):
                grads = [
                    g if group < 0 else ops.cast(weights[group], g.dtype) * g
                    for g, group in zip(grads, self._grad_groups())
                ]
            new_non_trainable = self._write(
                new_non_trainable, [(self._bank, smoothed), (self._steps, steps + 1.0)]
            )
        shapley = (
            self._shapley(trainable, non_trainable, x, y, y_pred) if self.log_shapley else None
        )
        extras = {f"mwam_weight_{n}": weights[i] for i, n in enumerate(names)}
        extras.update({f"mwam_frm_{n}": smoothed[i] for i, n in enumerate(names)})
        return StepResult(list(grads), new_non_trainable, y_pred, loss, shapley, extras=extras)
