"""OGM-GE: On-the-fly Gradient Modulation with Generalization Enhancement (Peng et al., CVPR 2022).

Per training step, with o_m the unimodal logits of modality m (research notes, algorithms.md §5):

    s_m  = Σ_i softmax(o_m,i)_{y_i}                       true-class score of the batch
    ρ_m  = s_m / min_c s_c                                discrepancy ratio (M = 2: s_a/s_v)
    k_m  = 1 − tanh(α · ρ_m)   if ρ_m > 1   else 1        only stronger modalities are slowed
    g_m ← k_m · g_m + N(0, (std(g_m) + 1e-8)²)            GE, per encoder tensor (ge=True)

applied to each modality's encoder gradients during the modulation epochs; the shared (fusion)
gradients and the loss are the plain ones. The ratio is the official one (``score_v/score_a``),
not BalanceBenchmark's two-modality code, which divides a score by itself; for M > 2 the ratio
to the weakest modality is BalanceBenchmark's extension, equal to the official ratio for M = 2.
The official code adds the GE noise to every modulated encoder tensor (the weaker modality's
too, with k = 1) and modulates only 4-D (conv) kernels (``modulated="conv_kernels"``); the
default modulates every encoder variable, as AGM's and BalanceBenchmark's re-implementations do.

Where the official code departs from its paper, the paper is followed: at a tie (ρ = 1) the
code's ``else`` branch slows the audio encoder by 1 − tanh(α); Eq. 10 gives k = 1 to both
(``tests/test_conformance_ogmge.py`` pins both).

Unimodal logits: OGM-GE's split of a linear late-fusion head (zoo ``concat``/``sum`` fusion),
o_m = W_m φ_m + b/M; for other models (an extension) the model's output with only modality m
present and the others zeroed, in inference mode.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from keras_msam.trainers import _checks
from keras_msam.trainers._balancing import (
    BalancingTrainer,
    check_positive,
    check_window,
    true_class_probability,
)
from keras_msam.trainers.base import StepResult

MODULATED = ("encoder", "conv_kernels")


def ogm_coefficients(scores: Any, alpha: float) -> Any:
    """k_m = 1 − tanh(α ρ_m) where ρ_m = s_m / min_c s_c > 1, else 1 (scores: (M,))."""
    scores = ops.cast(scores, "float32")
    ratio = scores / ops.maximum(ops.min(scores), 1e-12)
    return ops.where(ratio > 1.0, 1.0 - ops.tanh(alpha * ratio), ops.ones_like(ratio))


@keras.saving.register_keras_serializable(package="keras_msam")
class OGMGE(BalancingTrainer):
    """OGM-GE on any model with two or more modalities.

    Args:
        model: A Keras model with dict inputs keyed by modality name.
        alpha: Modulation strength α ≥ 0 (α = 0 is plain training, plus GE noise if ``ge``).
            The official code uses 0.1–0.5 depending on the data set.
        modulation_epochs: Inclusive ``(start, end)`` epochs (0-based) in which gradients are
            modulated; None modulates every epoch. Default (0, 50), the official setting.
        ge: Generalization Enhancement: add Gaussian noise with each encoder gradient tensor's
            standard deviation while modulating.
        unimodal: ``"auto"`` (the head split for linear late fusion, else zero-padded outputs),
            ``"split"`` or ``"zero_padded"``.
        modulated: ``"encoder"`` (every variable of a modality's encoder) or
            ``"conv_kernels"`` (only its rank-4 variables, the official code's choice).
        seed: Seed of the GE noise.
        **kwargs: See `MultimodalTrainer` (Shapley logging options, ``nonfinite``, ``name``).

    Logs ``ogm_coeff_<modality>``, the coefficient k_m applied this step.
    """

    def __init__(
        self,
        model: keras.Model,
        alpha: float = 0.1,
        modulation_epochs: tuple[int, int] | None = (0, 50),
        ge: bool = True,
        unimodal: str = "auto",
        modulated: str = "encoder",
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(model, **kwargs)
        self.alpha = check_positive(alpha, "alpha")
        self.modulation_epochs = check_window(modulation_epochs)
        self.ge = _checks.flag(ge, "ge")
        self.unimodal = unimodal
        self._source = self._resolve_unimodal(unimodal)
        if modulated not in MODULATED:
            raise ValueError(
                f"OGMGE modulated={modulated!r}: expected one of {', '.join(MODULATED)}."
            )
        self.modulated = modulated
        self.seed = _checks.optional_integer(seed, "seed", 0)
        self._noise_seed = keras.random.SeedGenerator(seed, name="ge_noise")
        self._extra_trackers = [self._mean_metric(f"ogm_coeff_{n}") for n in self.modality_names]

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "alpha": self.alpha,
            "modulation_epochs": self.modulation_epochs,
            "ge": self.ge,
            "unimodal": self.unimodal,
            "modulated": self.modulated,
            "seed": self.seed,
        }

    def compute_update(
        self, trainable: list[Any], non_trainable: list[Any], x: Any, y: Any, sample_weight: Any
    ) -> StepResult:
        split = self._source == "split"

        def loss_fn(weights):
            if split:
                y_pred, unimodal, new_nt, losses = self._split_forward(
                    weights, non_trainable, x, training=True
                )
            else:
                y_pred, new_nt, losses = self.stateless_call(
                    weights, non_trainable, x, return_losses=True, training=True
                )
                unimodal = None
            loss, unscaled = self._compiled_loss(x, y, y_pred, sample_weight, losses)
            extra = () if unimodal is None else (ops.stop_gradient(unimodal),)
            return loss, (unscaled, y_pred, new_nt, *extra)

        (_, aux), grads = self._value_and_grad(loss_fn)(trainable)
        loss, y_pred, new_non_trainable = aux[:3]
        with self._no_gradient():
            if split:
                unimodal, from_logits = aux[3], True
            else:
                unimodal = self._zero_padded_outputs(trainable, non_trainable, x)
                from_logits = self.resolved_from_logits is not False
            scores = ops.sum(true_class_probability(unimodal, y, from_logits), axis=-1)
            active = self._in_window(non_trainable, self.modulation_epochs)
            coefficients = ops.where(active, ogm_coefficients(scores, self.alpha), 1.0)
            groups = self._grad_groups()
            if self.modulated == "conv_kernels":
                groups = [g if len(v.shape) == 4 else -1 for g, v in zip(groups, grads)]
            if self.ge:
                modulated = [i for i, group in enumerate(groups) if group >= 0]
                noise, new_non_trainable = self._normal_noise(
                    new_non_trainable, self._noise_seed, [tuple(grads[i].shape) for i in modulated]
                )
                noise_of = dict(zip(modulated, noise))
            new_grads = []
            for index, (grad, group) in enumerate(zip(grads, groups)):
                if group < 0:
                    new_grads.append(grad)
                    continue
                grad32 = ops.cast(grad, "float32")
                updated = coefficients[group] * grad32
                if self.ge:
                    spread = _unbiased_std(grad32) + 1e-8
                    updated = updated + ops.where(active, spread, 0.0) * noise_of[index]
                new_grads.append(ops.cast(updated, grad.dtype))
        shapley = (
            self._shapley(trainable, non_trainable, x, y, y_pred) if self.log_shapley else None
        )
        extras = {f"ogm_coeff_{n}": coefficients[i] for i, n in enumerate(self.modality_names)}
        return StepResult(new_grads, new_non_trainable, y_pred, loss, shapley, extras=extras)


def _unbiased_std(tensor: Any) -> Any:
    """torch.Tensor.std(): the (N − 1)-normalised standard deviation over all elements."""
    count = 1
    for dim in tensor.shape:
        count *= int(dim)
    centred = tensor - ops.mean(tensor)
    return ops.sqrt(ops.sum(ops.square(centred)) / max(count - 1, 1))
