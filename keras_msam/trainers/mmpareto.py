"""MMPareto: Boosting Multimodal Learning with Innocent Unimodal Assistance (Wei & Hu, ICML 2024).

Per training step, following the official code (``GeWu-Lab/MMPareto_ICML2024@cc923ec``,
``code/MMPareto.py`` ``train_epoch`` and ``code/min_norm_solvers.py``), with o the fused logits
and o_m the unimodal logits of modality m:

    L = L_mm + Σ_m L_m              L_mm = compiled loss of o, L_m = mean CE(o_m, y)
    for each modality m, on its encoder variables θ_m (one vector: all its tensors):
        g_mm = ∂L_mm/∂θ_m,  g_m = ∂L_m/∂θ_m
        cos_m = <g_mm, g_m> / (‖g_mm‖ ‖g_m‖)
        (k, 1 − k) = (½, ½)                                      if cos_m > 0
                   = MinNorm: argmin_c ‖c g_mm + (1 − c) g_m‖²   otherwise, closed form
                     c = (v22 − v12) / (v11 + v22 − 2 v12)  with v11 = ‖g_mm‖², v12 = <g_mm, g_m>,
                     v22 = ‖g_m‖²; c = 0.999 if v12 ≥ v11, c = 0.001 if v12 ≥ v22
    per encoder tensor t of θ_m:
        h_t = 2k g_mm,t + 2(1 − k) g_m,t
        ∇θ_m,t ← γ · max(1, ‖g_mm,t + g_m,t‖ / ‖h_t‖) · h_t        (γ = 1.5, official)
    every other variable (fusion head, unimodal heads): the plain gradient of L

The weights k are per modality (the official code's cosine and MinNormSolver see the
concatenation of all the modality's encoder gradients); the magnitude rescaling is per tensor
(the official loop over ``named_parameters``), to the norm of that tensor's gradient of L
(= g_mm,t + g_m,t: L_c for c ≠ m does not reach θ_m) when that norm is the larger. With two
tasks per modality, ``MinNormSolver.find_min_norm_element`` returns the two-point closed form
above (its 0.999/0.001 clamps included); it is written here on `keras.ops`. Each modality is
balanced on its own (the official code has audio and visual written out; the same two-task
problem is solved for every modality, so any number M ≥ 2 works). Two gradient computations
per step: one of L_mm and one of Σ_m L_m (L_m reaches only encoder m and its head, so one
backward gives every g_m); the official code runs three backward passes plus one of L.

Unimodal logits (``unimodal``):

* ``"heads"`` (default, the official model): one linear head per modality on its encoder's
  features (official ``head_audio``/``head_video``, `nn.Linear(512, n_classes)`), owned by
  this trainer (``unimodal_heads``, saved with it; Keras ``Dense`` default initialisation), used
  only in training. Features of rank > 2 are mean-pooled over their middle axes first (the
  official model pools before its heads). Needs per-modality encoders (zoo ``encode``/``fuse``);
  any fusion, early fusion included.
* ``"split"`` (BalanceBenchmark's ``unimodality_calculate``): OGM-GE's split of a linear
  late-fusion head, o_m = W_m φ_m + b/M (zoo ``concat``/``sum`` fusion); then L_m also trains
  the fusion head's rows of modality m.

Differences from the references (the BalanceBenchmark one is pinned in the tests):

* BalanceBenchmark (``GeWu-Lab/BalanceBenchmark@4c1482f``,
  ``balancemm/trainer/MMPareto_trainer.py``) reads both tasks' gradients after running every
  backward pass without zeroing in between, so the "multimodal" and "unimodal" gradients are the
  same accumulated gradient: cos = 1 always and its encoders receive 2α(g_mm + g_m), twice this
  method's (and the official) γ(g_mm + g_m) of the aligned case; its conflict branch (never
  reached, then) would also assign the solver's output to the loop variable and leave both
  weights at 0. Here: the official code.
* The loss that `fit` logs is L_mm (the compiled loss, comparable with ``val_loss``); the
  official code prints L. Sample weights weight L_m as they weight the compiled loss; the
  model's own losses (regularisers, ``add_loss``) enter L_mm only.
* A model whose modalities own no trainable variables (early fusion of raw inputs, e.g. the
  zoo's ``mosi_early_gru``) is refused: there is nothing to balance. A modality whose encoder
  is frozen has no gradient to combine (it logs cos 0 and k = ½).
* A tensor whose combined gradient h_t is exactly zero keeps h_t = 0 (the official division
  gives NaN there); the official code has no epoch window (BalanceBenchmark's 0–80 window is
  not an option here).

Logs ``pareto_cos_<modality>`` (cos_m) and ``pareto_mm_weight_<modality>`` (k) every step.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from keras_msam.trainers import _checks
from keras_msam.trainers import _unimodal_heads as heads
from keras_msam.trainers._balancing import BalancingTrainer
from keras_msam.trainers.base import StepResult

UNIMODAL_SOURCES = ("heads", "split")
#: MinNormSolver's clamps when one gradient's projection reaches the other's norm.
_CLAMP_HIGH, _CLAMP_LOW = 0.999, 0.001
_COS_EPS = 1e-8  # torch.nn.functional.cosine_similarity's eps


def min_norm_weight(v11: Any, v12: Any, v22: Any) -> Any:
    """c minimising ‖c g1 + (1 − c) g2‖² from v11 = ‖g1‖², v12 = <g1, g2>, v22 = ‖g2‖².

    The two-task closed form of the official ``MinNormSolver._min_norm_element_from2``:
    0.999 when v12 ≥ v11, else 0.001 when v12 ≥ v22, else (v22 − v12) / (v11 + v22 − 2 v12).
    """
    v11, v12, v22 = (ops.cast(v, "float32") for v in (v11, v12, v22))
    denominator = v11 + v22 - 2.0 * v12
    safe = ops.where(denominator > 0, denominator, ops.ones_like(denominator))
    inner = (v22 - v12) / safe
    return ops.where(v12 >= v11, _CLAMP_HIGH, ops.where(v12 >= v22, _CLAMP_LOW, inner))


def pareto_weight(v11: Any, v12: Any, v22: Any) -> Any:
    """Weight k of the multimodal gradient: ½ when <g_mm, g_m> > 0 (cos > 0), else MinNorm."""
    v12 = ops.cast(v12, "float32")
    return ops.where(v12 > 0, 0.5, min_norm_weight(v11, v12, v22))


def cosine(v11: Any, v12: Any, v22: Any) -> Any:
    """cos = v12 / (max(‖g1‖, 1e-8) · max(‖g2‖, 1e-8)), torch's ``cosine_similarity``."""
    norms = ops.maximum(ops.sqrt(ops.cast(v11, "float32")), _COS_EPS) * ops.maximum(
        ops.sqrt(ops.cast(v22, "float32")), _COS_EPS
    )
    return ops.cast(v12, "float32") / norms


def pareto_combine(g_mm: list[Any], g_uni: list[Any], weight: Any, gamma: float) -> list[Any]:
    """γ · max(1, ‖g_mm,t + g_m,t‖ / ‖h_t‖) · h_t with h_t = 2k g_mm,t + 2(1 − k) g_m,t, per tensor.

    Args:
        g_mm: One modality's encoder gradients of the multimodal loss, one tensor per variable.
        g_uni: The same variables' gradients of that modality's unimodal loss.
        weight: k, the weight of the multimodal gradient (scalar).
        gamma: The magnitude factor γ.

    Returns:
        The combined gradients, in the dtypes of ``g_mm``.
    """
    weight = ops.cast(weight, "float32")
    combined = []
    for a, b in zip(g_mm, g_uni, strict=True):
        a32, b32 = ops.cast(a, "float32"), ops.cast(b, "float32")
        new = 2.0 * weight * a32 + 2.0 * (1.0 - weight) * b32
        total_norm = ops.sqrt(ops.sum(ops.square(a32 + b32)))
        new_norm = ops.sqrt(ops.sum(ops.square(new)))
        ratio = total_norm / ops.where(new_norm > 0, new_norm, ops.ones_like(new_norm))
        scale = ops.where(ops.logical_and(new_norm > 0, ratio > 1.0), ratio, 1.0)
        combined.append(ops.cast(gamma * scale * new, a.dtype))
    return combined


def _fail(message: str) -> ValueError:
    return ValueError(f"MMPareto: {message}")


@keras.saving.register_keras_serializable(package="keras_msam")
class MMPareto(BalancingTrainer):
    """MMPareto on a model with per-modality encoders and two or more modalities.

    Args:
        model: A Keras model with dict inputs keyed by modality name: a zoo model (per-modality
            encoders, ``encode``/``fuse``) for ``unimodal="heads"``, a zoo model with linear late
            fusion (``concat``/``sum``) for ``unimodal="split"``.
        gamma: Magnitude factor γ > 0 of the encoder gradients (official 1.5, BalanceBenchmark's
            ``alpha``).
        unimodal: Unimodal logits: ``"heads"`` (official: a linear head per modality on its
            features, owned by the trainer) or ``"split"`` (the fusion head's per-modality
            terms, BalanceBenchmark).
        **kwargs: See `MultimodalTrainer` (Shapley logging options, ``nonfinite``, ``name``).

    Logs ``pareto_cos_<modality>`` (cosine of the multimodal and unimodal encoder gradients) and
    ``pareto_mm_weight_<modality>`` (k, the weight of the multimodal gradient: ½ when aligned).
    """

    def __init__(
        self,
        model: keras.Model,
        gamma: float = 1.5,
        unimodal: str = "heads",
        **kwargs: Any,
    ) -> None:
        super().__init__(model, **kwargs)
        try:
            self.gamma = _checks.positive(gamma, "gamma", allow_zero=False)
            self.unimodal = _checks.choice(unimodal, "unimodal", UNIMODAL_SOURCES)
        except ValueError as error:
            raise _fail(str(error)) from None
        names = self.modality_names
        if not any(self.structure.variable_groups.get(n) for n in names):
            raise _fail(
                f"it balances each modality's encoder gradients, and model {model.name!r} has "
                f"no trainable modality-specific variables (e.g. early fusion of the raw "
                f"inputs): nothing to balance. Use Joint."
            )
        if self.unimodal == "split" and not getattr(model, "supports_unimodal_logits", False):
            raise _fail(
                f"unimodal='split' needs unimodal logits from a linear late-fusion head (a zoo "
                f"model with 'concat' or 'sum' fusion); model {model.name!r} has none. Use "
                f"unimodal='heads' with a zoo model."
            )
        self.unimodal_heads = []
        if self.unimodal == "heads":
            self.unimodal_heads = heads.build_heads(
                self, model, "pareto_head", lambda message: _fail(f"unimodal='heads' {message}")
            )
        self._extra_trackers = [self._mean_metric(f"pareto_cos_{n}") for n in names] + [
            self._mean_metric(f"pareto_mm_weight_{n}") for n in names
        ]

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "gamma": self.gamma, "unimodal": self.unimodal}

    # ------------------------------------------------------------------ forwards
    def _unimodal_outputs(self, trainable: list[Any], non_trainable: list[Any], x: Any) -> Any:
        """Unimodal logits (M, B, C), float32, in training mode, as a function of ``trainable``."""
        if self.unimodal == "split":
            _, unimodal, _, _ = self._split_forward(trainable, non_trainable, x, training=True)
            return unimodal
        mapping = self._state_mapping(trainable, non_trainable)
        with keras.StatelessScope(state_mapping=mapping):
            features = self.model.encode(x, training=True)
            return heads.head_logits(self.unimodal_heads, self.modality_names, features)

    # ------------------------------------------------------------------ step
    def compute_update(
        self, trainable: list[Any], non_trainable: list[Any], x: Any, y: Any, sample_weight: Any
    ) -> StepResult:
        names = self.modality_names

        def unimodal_fn(variables):
            per_modality = heads.cross_entropies(
                self._unimodal_outputs(variables, non_trainable, x), y, sample_weight
            )
            total = ops.sum(per_modality)
            if self.optimizer is not None:
                total = self.optimizer.scale_loss(total)
            return total, per_modality

        (_, (loss, y_pred, new_non_trainable)), g_mm = self._value_and_grad(self._loss_fn)(
            trainable, non_trainable, x, y, sample_weight
        )
        _, g_uni = self._value_and_grad(unimodal_fn)(trainable)
        with self._no_gradient():
            groups = self._grad_groups()
            grads = [
                ops.cast(ops.cast(a, "float32") + ops.cast(b, "float32"), a.dtype)
                for a, b in zip(g_mm, g_uni, strict=True)
            ]
            extras = {}
            for index, name in enumerate(names):
                owned = [i for i, group in enumerate(groups) if group == index]
                if not owned:  # a modality without trainable encoder variables
                    extras[f"pareto_cos_{name}"] = ops.zeros(())
                    extras[f"pareto_mm_weight_{name}"] = ops.full((), 0.5)
                    continue
                mm = [ops.cast(g_mm[i], "float32") for i in owned]
                uni = [ops.cast(g_uni[i], "float32") for i in owned]
                v11 = sum((ops.sum(a * a) for a in mm), ops.zeros(()))
                v12 = sum((ops.sum(a * b) for a, b in zip(mm, uni)), ops.zeros(()))
                v22 = sum((ops.sum(b * b) for b in uni), ops.zeros(()))
                weight = pareto_weight(v11, v12, v22)
                for i, g in zip(owned, pareto_combine(mm, uni, weight, self.gamma)):
                    grads[i] = ops.cast(g, g_mm[i].dtype)
                extras[f"pareto_cos_{name}"] = cosine(v11, v12, v22)
                extras[f"pareto_mm_weight_{name}"] = weight
        shapley = (
            self._shapley(trainable, non_trainable, x, y, y_pred) if self.log_shapley else None
        )
        return StepResult(grads, new_non_trainable, y_pred, loss, shapley, extras=extras)
