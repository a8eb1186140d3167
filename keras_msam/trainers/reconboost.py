"""ReconBoost: modality-alternating boosting (Hua et al., "ReconBoost: Boosting Can Achieve
Modality Reconcilement", ICML 2024), following the official code (``huacong/ReconBoost@441eb51``,
``train.py`` / ``train_MSA.py`` ``main()`` and ``models/dynamic_net.py``).

Each modality m has a learner f_m; the ensemble is F = β · Σ_{k ∈ E} f_k with a learnable boost
rate β (``DynamicNet.boost_rate``) over the ensemble E of learners trained so far. Training runs
in *stages*; stage s (0, 1, 2, ...) picks the modality m = s mod M (``schedule.py``, fixed mode)
and runs two phases:

1. Alternating boosting, ``stage_length`` epochs (official ``epochs_per_stage``, default 4):
   only learner m is updated, on the reconcilement loss (per example i, C classes, y one-hot)

       F_{−m}  = β · Σ_{k ∈ E, k ≠ m} f_k              the others' ensemble, without gradient
       ℓ_i     = −(1/C) · (w₁ − w₂ · softmax(F_{−m,i})_{y_i}) · log softmax(f_m,i)_{y_i}
       GA      = mean_{i,c} (softmax(f_m) − softmax(f_{m−1}))²     both without gradient
       L₁      = mean_i ℓ_i + α · GA  (α·GA only from stage 1 on)

   i.e. w₁·CE(f_m, y) minus w₂·CE(f_m, y ⊙ softmax(F_{−m})), the code's form of the paper's
   KL reconcilement (the 1/C is the code's ``.mean(-1)`` over classes). While E holds no other
   learner (stage 0 without pre-trained learners) the code uses a scalar c₀ whose softmax over
   its single column is 1, so the weight is w₁ − w₂. The "memory consolidation" term GA (m − 1:
   the modality of the previous stage, cyclically) is computed on detached predictions in the
   official code (and in BalanceBenchmark), so it adds a constant to the loss and nothing to
   the gradient; it is kept that way here (logged, in the loss value, no gradient).
2. Global rectification, ``rectify_length`` epochs (official ``correct_epoch``, default 4):
   after learner m joins E, every learner in E and β are updated on CE(β · Σ_{k ∈ E} f_k, y)
   (here: the compiled loss of that ensemble).

Prediction (the official ``test``): argmax softmax(β · Σ_{k ∈ E} f_k).

Keras mapping (choices):

* Learners: f_k = o_k, the split of a linear late-fusion head (zoo ``concat``/``sum`` fusion),
  o_k = W_k φ_k + b/M, so Σ_k o_k is the model's own output. The official default
  (``common_space=True``) gives every modality's encoder one shared MLP head; the split gives
  each modality its slice of the linear head (the official ``common_space=False`` with linear
  ``fc`` heads, up to the shared bias b, which every learner carries as b/M). The conformance
  fixture runs the official loop with ``common_space=False``.
* Schedule: derived from a counter held as trainer state (the epoch counter `fit` keeps, or,
  with ``unit="step"``, a step counter that counts every training batch), so it runs inside
  jit/graph steps and resumes from a saved trainer. Stage s = ⌊c / (T₁ + T₂)⌋, boosting while
  c mod (T₁ + T₂) < T₁, active modality s mod M over the sorted modality names.
* Ensemble membership E (``pretrained=False``, the official default flag): modality k joins
  after its first boosting phase, so phase 1 of stage s uses k < s (k ≠ m) and phase 2 k ≤ s.
  ``pretrained=True`` (the official ``--use_pretrain`` of every README command, with pre-trained
  unimodal learners; BalanceBenchmark's only behaviour): every modality is in E from stage 0.
* Freezing: the update direction of every variable of another modality's encoder is exactly 0
  in phase 1 (and of non-members in phase 2), the shared head's and β's are the loss's own.
  The official code instead builds a fresh ``SGD(momentum=0.9, weight_decay=5e-4)`` over only
  the active learner (phase 1) or the ensemble and β (phase 2) at every phase. With one compiled
  optimizer: momentum-free SGD without weight decay reproduces it exactly (the fixture test);
  with momentum, a frozen variable keeps moving by its remaining velocity for ~1/(1 − μ) steps
  after a phase switch, optimizer weight decay still shrinks it, and slot state is never reset
  between phases. The official per-stage learning-rate decay is a schedule for the user.
* One learning rate: the official ``m_lr`` (phase 1) and ``e_lr`` (phase 2) are both 0.01.
* `predict`/`evaluate` (the trainer's ``call``) return β · Σ_{k ∈ E} o_k with E the ensemble of
  the stage of the last training epoch/step (all modalities after the first M stages), the
  official inference; ``trainer.model`` alone is Σ_k o_k (the same argmax while β > 0 and E is
  complete). Shapley coalitions (logs) are formed on that ensemble.

BalanceBenchmark (``balancemm/trainer/ReconBoost_trainer.py``) differs from the official code:
β starts at 0.01 (official 1.0), every modality is in the ensemble from the start
(``pretrained=True`` here), both phases last ``T_epochs`` (= ``stage_length`` =
``rectify_length``), one persistent optimizer (as here), its shared head is one linear layer,
and GA is skipped in epoch 0 rather than stage 0. Defaults follow the official code.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops
from keras.src.losses.loss import scale_loss_for_distribution

from keras_msam.absence import absent_example
from keras_msam.modalities import validate_inputs
from keras_msam.shapley import class_indices
from keras_msam.trainers import _checks
from keras_msam.trainers._balancing import BalancingTrainer, check_positive
from keras_msam.trainers.base import StepResult

SCHEDULE_UNITS = ("epoch", "step")


def reconboost_schedule(
    counter: Any, stage_length: int, rectify_length: int, num_modalities: int
) -> tuple[Any, Any, Any]:
    """(stage s, active modality s mod M, boosting phase?) of an epoch/step counter c ≥ 0.

    Stage s covers counters [s·(T₁ + T₂), (s + 1)·(T₁ + T₂)): T₁ boosting, then T₂ rectifying.
    """
    counter = ops.cast(counter, "float32")
    period = float(stage_length + rectify_length)
    stage = ops.floor(counter / period)
    within = counter - stage * period
    active = stage - ops.floor(stage / num_modalities) * num_modalities
    return stage, ops.cast(active, "int32"), within < float(stage_length)


def reconcilement_loss(
    active_logits: Any,
    others_logits: Any,
    has_others: Any,
    y: Any,
    weight1: float,
    weight2: float,
) -> Any:
    """Per-example official boosting loss ℓ_i (B,).

    ℓ_i = −(1/C)(w₁ − w₂ p_i) log softmax(f_m,i)_{y_i}, p_i = softmax(F_{−m,i})_{y_i}, or p_i = 1
    where ``has_others`` is False (the code's empty-ensemble c₀).
    """
    active_logits = ops.cast(active_logits, "float32")
    num_classes = int(active_logits.shape[-1])
    one_hot = ops.one_hot(class_indices(y, num_classes), num_classes, dtype="float32")
    log_prob = ops.sum(one_hot * ops.log_softmax(active_logits, axis=-1), axis=-1)
    others = ops.sum(one_hot * ops.softmax(ops.cast(others_logits, "float32"), axis=-1), axis=-1)
    others = ops.where(has_others, others, ops.ones_like(others))
    return -(weight1 - weight2 * ops.stop_gradient(others)) * log_prob / num_classes


def consolidation_loss(active_logits: Any, previous_logits: Any) -> Any:
    """GA = mean over examples and classes of (softmax(f_m) − softmax(f_{m−1}))², no gradient."""
    active = ops.softmax(ops.stop_gradient(ops.cast(active_logits, "float32")), axis=-1)
    previous = ops.softmax(ops.stop_gradient(ops.cast(previous_logits, "float32")), axis=-1)
    return ops.mean(ops.square(active - previous))


@keras.saving.register_keras_serializable(package="keras_msam")
class ReconBoost(BalancingTrainer):
    """ReconBoost on a model with linear late fusion and two or more modalities.

    Args:
        model: A model with per-modality logits (zoo ``concat``/``sum`` fusion:
            ``supports_unimodal_logits``, ``encode``, ``fuse``, ``unimodal_logits``,
            ``head_bias``), outputting logits.
        weight1: w₁ ≥ 0 of the reconcilement loss (official 5.0 on CREMA-D, 4.0 on AVE and
            ModelNet40, 1.0 on the MSA sets).
        weight2: w₂ ≥ 0 (official 1.0; 0.25 on the MSA sets).
        alpha: α ≥ 0 of the GA (memory consolidation) term; it has no gradient in the official
            code, so it only shifts the logged loss (official 0.5).
        boost_rate: Initial β > 0 (official 1.0, BalanceBenchmark 0.01); β is a trainable
            variable of the trainer, updated in the rectification phases.
        stage_length: T₁ ≥ 1, length of each boosting phase (official ``epochs_per_stage`` 4).
        rectify_length: T₂ ≥ 0, length of each global rectification (official
            ``correct_epoch`` 4); 0 disables it.
        unit: ``"epoch"`` (T₁, T₂ in epochs of `fit`, as the official code; the epoch counter
            is set by `fit`, so `train_on_batch` alone stays in epoch 0) or ``"step"`` (in
            training steps, counted by the trainer, `train_on_batch` included).
        pretrained: Every modality is in the ensemble from the first stage (official
            ``--use_pretrain``, BalanceBenchmark); False: a modality joins after its first stage.
        **kwargs: See `MultimodalTrainer` (Shapley logging options, ``nonfinite``, ``name``).

    Logs ``reconboost_active`` (index of the stage's modality in the sorted names),
    ``reconboost_stage``, ``reconboost_phase`` (0 boosting, 1 rectification),
    ``reconboost_boost_loss`` (mean ℓ_i), ``reconboost_ga_loss`` (GA),
    ``reconboost_rectify_loss`` (the ensemble's compiled loss) and ``reconboost_rate`` (β). The
    three losses are evaluated every step; ``loss`` is the one the phase minimises.
    """

    def __init__(
        self,
        model: keras.Model,
        weight1: float = 5.0,
        weight2: float = 1.0,
        alpha: float = 0.5,
        boost_rate: float = 1.0,
        stage_length: int = 4,
        rectify_length: int = 4,
        unit: str = "epoch",
        pretrained: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(model, **kwargs)
        if not bool(getattr(model, "supports_unimodal_logits", False)):
            raise ValueError(
                f"ReconBoost boosts per-modality learners whose logits sum to the model's "
                f"output: it needs a model with linear late fusion (zoo 'concat' or 'sum' "
                f"fusion: `supports_unimodal_logits`, `encode`, `fuse`, `unimodal_logits`, "
                f"`head_bias`); model {model.name!r} has none."
            )
        if int(ops.shape(model.head_bias())[-1]) < 2:
            raise ValueError(
                f"ReconBoost weighs softmax probabilities: it needs logits of two or more "
                f"classes; model {model.name!r} outputs one."
            )
        self.weight1 = check_positive(weight1, "ReconBoost weight1")
        self.weight2 = check_positive(weight2, "ReconBoost weight2")
        self.alpha = check_positive(alpha, "ReconBoost alpha")
        self.boost_rate = check_positive(boost_rate, "ReconBoost boost_rate", allow_zero=False)
        self.stage_length = _checks.integer(stage_length, "ReconBoost stage_length", 1)
        self.rectify_length = _checks.integer(rectify_length, "ReconBoost rectify_length", 0)
        self.unit = _checks.choice(unit, "ReconBoost unit", SCHEDULE_UNITS)
        self.pretrained = _checks.flag(pretrained, "ReconBoost pretrained")
        self._steps = self._add_state("steps")
        self._rate = self.add_weight(
            name="boost_rate",
            shape=(),
            initializer=keras.initializers.Constant(self.boost_rate),
            trainable=True,
            dtype="float32",
        )
        self._extra_trackers = [
            self._mean_metric(name)
            for name in (
                "reconboost_active",
                "reconboost_stage",
                "reconboost_phase",
                "reconboost_boost_loss",
                "reconboost_ga_loss",
                "reconboost_rectify_loss",
                "reconboost_rate",
            )
        ]

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "weight1": self.weight1,
            "weight2": self.weight2,
            "alpha": self.alpha,
            "boost_rate": self.boost_rate,
            "stage_length": self.stage_length,
            "rectify_length": self.rectify_length,
            "unit": self.unit,
            "pretrained": self.pretrained,
        }

    # ------------------------------------------------------------------ schedule
    def schedule(self, counter: Any) -> tuple[Any, Any, Any]:
        """(stage, active modality index, boosting phase?) at an epoch/step counter."""
        return reconboost_schedule(
            counter, self.stage_length, self.rectify_length, len(self.modality_names)
        )

    def _members(self, stage: Any, active: Any, boosting: Any) -> Any:
        """Float mask (M,) of the learners in the ensemble used by the phase: the others in the
        ensemble (boosting phase) or the whole ensemble (rectification, inference)."""
        index = ops.arange(len(self.modality_names), dtype="float32")
        joined = (
            ops.ones_like(index)
            if self.pretrained
            else ops.cast(ops.where(boosting, index < stage, index <= stage), "float32")
        )
        others = ops.cast(ops.not_equal(ops.cast(index, "int32"), active), "float32")
        return ops.where(boosting, joined * others, joined)

    def _inference_members(self, counter: Any) -> Any:
        """The ensemble after the last training epoch (or step) the counter has reached."""
        if self.unit == "step":
            counter = ops.maximum(ops.cast(counter, "float32") - 1.0, 0.0)
        stage, active, _ = self.schedule(counter)
        return self._members(stage, active, ops.convert_to_tensor(False))

    def _counter(self) -> Any:
        return self._epoch if self.unit == "epoch" else self._steps

    def _state_advancing_on_skip(self) -> set[int]:
        """The step counter counts batches, skipped (non-finite) ones too."""
        return {self._state_index(self._steps)}

    # ------------------------------------------------------------------ inference
    def _ensemble(self, learners: Any, members: Any, rate: Any) -> Any:
        """β · Σ_k members_k o_k for learner logits o (M, ..., C)."""
        learners = ops.cast(learners, "float32")
        shape = (len(self.modality_names),) + (1,) * (len(learners.shape) - 1)
        weights = ops.reshape(ops.cast(members, "float32"), shape)
        return ops.cast(rate, "float32") * ops.sum(weights * learners, axis=0)

    def _learners(self, parts: dict[str, Any], bias: Any) -> Any:
        """o (M, ..., C): each modality's contribution plus its share b/M of the head bias."""
        share = ops.cast(bias, "float32") / len(self.modality_names)
        return ops.stack([ops.cast(parts[n], "float32") + share for n in self.modality_names])

    def call(self, inputs: Any, training: bool = False) -> Any:
        """β · Σ_{k ∈ E} o_k, the official ensemble prediction (logits)."""
        validate_inputs(inputs, self.structure)
        features = self.model.encode(inputs, training=training)
        learners = self._learners(self.model.unimodal_logits(features), self.model.head_bias())
        members = self._inference_members(self._counter().value)
        return self._ensemble(learners, members, self._rate.value)

    def _feature_coalition_outputs(
        self, trainable: list[Any], non_trainable: list[Any], x: Any
    ) -> Any:
        """Coalition outputs (K, B, C) of the ensemble prediction, absent modalities' features
        being their encoders' outputs for an all-zero input."""
        names = self.modality_names
        mapping = self._state_mapping(trainable, non_trainable)
        with self._no_gradient(), keras.StatelessScope(state_mapping=mapping):
            present = self.model.unimodal_logits(self.model.encode(x, training=False))
            empty = absent_example(x, names, self.structure.absence)
            absent = self.model.unimodal_logits(self.model.encode(empty, training=False))
            bias = ops.convert_to_tensor(self.model.head_bias())
            rate = self._rate.value
            members = self._inference_members(self._counter().value)
        present = self._learners(present, bias)  # (M, B, C)
        absent = self._learners(absent, bias)  # (M, 1, C)
        keep = ops.convert_to_tensor(self._plan.masks.T[:, :, None, None])  # (M, K, 1, 1)
        chosen = ops.where(keep, ops.expand_dims(present, 1), ops.expand_dims(absent, 1))
        return ops.stop_gradient(self._ensemble(chosen, members, rate))  # (K, B, C)

    # ------------------------------------------------------------------------ the step
    def compute_update(
        self, trainable: list[Any], non_trainable: list[Any], x: Any, y: Any, sample_weight: Any
    ) -> StepResult:
        if self.resolved_from_logits is False:
            raise ValueError(
                "ReconBoost boosts logits: the model must output logits (compile with a loss "
                "that has from_logits=True)."
            )
        count = len(self.modality_names)
        counter = self._read(non_trainable, self._counter())
        stage, active, boosting = self.schedule(counter)
        others = self._members(stage, active, ops.convert_to_tensor(True))
        ensemble_members = self._members(stage, active, ops.convert_to_tensor(False))
        phase_members = ops.where(boosting, ops.one_hot(active, count), ensemble_members)
        previous = ops.one_hot((active + count - 1) % count, count)
        rate_index = next(i for i, v in enumerate(self.trainable_variables) if v is self._rate)
        has_others = ops.sum(others) > 0
        weight = None if sample_weight is None else ops.cast(sample_weight, "float32")

        def loss_fn(weights):
            _, parts, new_nt, losses = self._split_forward(weights, non_trainable, x, True)
            rate = ops.cast(weights[rate_index], "float32")
            active_logits = ops.einsum("m,mbc->bc", ops.one_hot(active, count), parts)
            others_logits = rate * ops.einsum("m,mbc->bc", others, ops.stop_gradient(parts))
            per_example = reconcilement_loss(
                active_logits, others_logits, has_others, y, self.weight1, self.weight2
            )
            if weight is not None:
                per_example = per_example * ops.reshape(weight, ops.shape(per_example))
            boost = ops.mean(per_example)
            previous_logits = ops.einsum("m,mbc->bc", previous, parts)
            ga = consolidation_loss(active_logits, previous_logits)
            boosting_loss = boost + ops.where(stage > 0, self.alpha * ga, 0.0)
            if losses:
                boosting_loss = boosting_loss + ops.sum(
                    ops.stack([ops.cast(loss, "float32") for loss in losses])
                )
            y_pred = self._ensemble(parts, ensemble_members, rate)
            rectify_scaled, rectify = self._compiled_loss(x, y, y_pred, sample_weight, losses)
            boosting_scaled = scale_loss_for_distribution(boosting_loss)
            if self.optimizer is not None:
                boosting_scaled = self.optimizer.scale_loss(boosting_scaled)
            scaled = ops.where(boosting, boosting_scaled, ops.cast(rectify_scaled, "float32"))
            unscaled = ops.where(
                boosting,
                scale_loss_for_distribution(boosting_loss),
                ops.cast(rectify, "float32"),
            )
            terms = (boost, ga, ops.cast(rectify, "float32"))
            return scaled, (unscaled, ops.stop_gradient(y_pred), new_nt, terms)

        (_, aux), grads = self._value_and_grad(loss_fn)(trainable)
        loss, y_pred, new_non_trainable, (boost, ga, rectify) = aux
        with self._no_gradient():
            new_grads = []
            for grad, group in zip(grads, self._grad_groups()):
                if group < 0:  # the head and β: the phase loss's own gradient
                    new_grads.append(grad)
                else:  # another modality's encoder, or a learner not yet in the ensemble
                    keep = phase_members[group] > 0
                    new_grads.append(ops.where(keep, grad, ops.zeros_like(grad)))
            steps = self._read(non_trainable, self._steps)
            new_non_trainable = self._write(new_non_trainable, [(self._steps, steps + 1.0)])
        # Coalitions use the ensemble of the last completed step (see `call`), so the step's
        # own predictions are not reused as the full coalition.
        shapley = self._shapley(trainable, non_trainable, x, y) if self.log_shapley else None
        extras = {
            "reconboost_active": ops.cast(active, "float32"),
            "reconboost_stage": stage,
            "reconboost_phase": 1.0 - ops.cast(boosting, "float32"),
            "reconboost_boost_loss": boost,
            "reconboost_ga_loss": ga,
            "reconboost_rectify_loss": rectify,
            "reconboost_rate": ops.cast(trainable[rate_index], "float32"),
        }
        return StepResult(new_grads, new_non_trainable, y_pred, loss, shapley, extras=extras)
