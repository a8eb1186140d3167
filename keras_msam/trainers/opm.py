"""OPM: on-the-fly prediction modulation (Wei, Hu et al., TPAMI 2024, "adam-drop").

Following the official code (``GeWu-Lab/BML_TPAMI2024@8db168f``, ``code/models/Classifier.py``
``calcu_q``, ``Modality_drop.execute_drop``, ``custom_autograd``; ``code/main.py`` ``train``):
per training step after the warm-up epochs (official ``epoch <= 5`` trains plainly),

    P_m = Σ_i softmax(o_m)_i,y_i          o_m: modality m's unimodal logits (OGM-GE's split
                                          of a linear late-fusion head, bias / M; no gradient)
    q_m = clip(q_base·(1 + λ·tanh(relu(P_m / P_other − 1))), 0, 1)  if that ratio term > 0,
          else 0                          (q_base = 0.5, λ = 0.5; only a leading modality drops)
    with probability p_exe (0.7):  each example keeps modality m's features with probability
          1 − q_m (independently per example and modality), and every kept feature is divided
          by 1 − θ, θ = Σ_m d_m q_m / Σ_m d_m (d_m: the features' size): the fused prediction
          is then computed from these features and trained with the task loss alone.

The dropped features get no gradient; the kept ones the gradient scaled by 1/(1 − θ) (the
official ``custom_autograd`` backward, which is what differentiation of the forward gives).

Choices and differences:

* Any M ≥ 2: P_other is the mean of the other modalities' P (for M = 2, the official ratio);
  BalanceBenchmark's ``OPM_trainer`` divides by their sum for M = 3.
* The official code removes examples whose modalities were all dropped. With this q rule the
  weakest modality always has q = 0, so that never happens (tested); it is not needed.
* Non-linear fusion: ``unimodal="zero_padded"`` reads o_m from the model with only modality m
  present (inference mode), for early and gated fusion; ``"auto"`` picks the split when the
  head is linear.
* The draws come from a seeded generator (``seed``) whose state is part of the trainer state,
  so a run is reproducible on each backend and resumes exactly from a saved trainer.
"""

from __future__ import annotations

import math
from typing import Any

import keras
from keras import ops

from keras_msam.trainers import _checks
from keras_msam.trainers import _unimodal_heads as heads
from keras_msam.trainers._balancing import (
    BalancingTrainer,
    scale_features,
    true_class_probability,
)
from keras_msam.trainers.base import StepResult

_RATIO_EPS = 1e-12


def _fail(message: str) -> ValueError:
    return ValueError(f"OPM: {message}")


def drop_probabilities(performance: Any, q_base: float, lam: float) -> Any:
    """q_m = clip(q_base(1 + λ tanh(relu(P_m / mean_{k≠m} P_k − 1))), 0, 1) where that term > 0."""
    performance = ops.cast(performance, "float32")
    count = int(performance.shape[0])
    others = (ops.sum(performance) - performance) / (count - 1)
    ratio = ops.tanh(ops.relu(performance / ops.maximum(others, _RATIO_EPS) - 1.0))
    q = ops.where(ratio > 0, q_base * (1.0 + lam * ratio), ops.zeros_like(ratio))
    return ops.clip(q, 0.0, 1.0)


def drop_features(
    features: dict[str, Any], names: tuple[str, ...], keep: Any, q: Any, sizes: list[int]
) -> dict[str, Any]:
    """Features times the keep mask (M, B) of their modality, divided by 1 − θ."""
    theta = ops.sum(ops.convert_to_tensor(sizes, "float32") * ops.cast(q, "float32")) / float(
        sum(sizes)
    )
    return scale_features(features, names, keep / (1.0 - theta))


@keras.saving.register_keras_serializable(package="keras_msam")
class OPM(BalancingTrainer):
    """On-the-fly prediction modulation on a zoo model with two or more modalities.

    Args:
        model: A zoo model (per-modality encoders, ``encode``/``fuse``).
        q_base: Base drop probability of a leading modality (official 0.5).
        lam: λ ≥ 0, how much the lead raises it (official 0.5).
        p_exe: Probability that a step drops at all (official 0.7).
        warmup_epochs: Epochs (from 0) trained without dropping (official 6: ``epoch <= 5``).
        unimodal: Source of o_m: ``"auto"``, ``"split"`` or ``"zero_padded"``.
        seed: Seed of the drop draws.
        **kwargs: See `MultimodalTrainer` (Shapley logging options, ``nonfinite``, ``name``).

    Logs ``opm_q_<modality>`` (q_m this step), ``opm_performance_<modality>`` (P_m / B) and
    ``opm_dropped_<modality>`` (the share of examples whose modality m was dropped).
    """

    def __init__(
        self,
        model: keras.Model,
        q_base: float = 0.5,
        lam: float = 0.5,
        p_exe: float = 0.7,
        warmup_epochs: int = 6,
        unimodal: str = "auto",
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(model, **kwargs)
        self.q_base = _checks.number(q_base, "OPM q_base", 0.0, maximum=1.0)
        self.lam = _checks.positive(lam, "OPM lam")
        self.p_exe = _checks.number(p_exe, "OPM p_exe", 0.0, maximum=1.0)
        self.warmup_epochs = _checks.integer(warmup_epochs, "OPM warmup_epochs", 0)
        self.seed = _checks.optional_integer(seed, "OPM seed", 0)
        if not heads.has_encoders(model):
            raise _fail(
                f"it drops each modality's features before fusion (a zoo model: "
                f"`encode(inputs)`/`fuse(features)`); model {model.name!r} has none. Wrap the "
                f"model as a zoo MultimodalClassifier."
            )
        try:
            self.unimodal = self._resolve_unimodal(unimodal)
        except ValueError as error:
            raise _fail(str(error)) from None
        self.unimodal_option = unimodal
        shapes = heads.feature_shapes(self, model)
        self._sizes = [math.prod(int(d) for d in shapes[n][1:]) for n in self.modality_names]
        self._draws = keras.random.SeedGenerator(seed, name="opm_drop")
        names = self.modality_names
        self._extra_trackers = (
            [self._mean_metric(f"opm_q_{n}") for n in names]
            + [self._mean_metric(f"opm_performance_{n}") for n in names]
            + [self._mean_metric(f"opm_dropped_{n}") for n in names]
        )

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "q_base": self.q_base,
            "lam": self.lam,
            "p_exe": self.p_exe,
            "warmup_epochs": self.warmup_epochs,
            "unimodal": self.unimodal_option,
            "seed": self.seed,
        }

    # ------------------------------------------------------------------ step
    def compute_update(
        self, trainable: list[Any], non_trainable: list[Any], x: Any, y: Any, sample_weight: Any
    ) -> StepResult:
        names = self.modality_names
        count = len(names)
        batch = ops.shape(x[names[0]])[0]
        (execute, keep_draw), new_state = self._random_draws(
            non_trainable, self._draws, [(1,), (count, batch)]
        )
        epoch = self._read(non_trainable, self._epoch)
        dropping = ops.logical_and(epoch >= self.warmup_epochs, execute[0] < self.p_exe)
        from_logits = self.resolved_from_logits is not False
        padded = (
            self._zero_padded_outputs(trainable, non_trainable, x)
            if self.unimodal == "zero_padded"
            else None
        )

        def loss_fn(weights):
            mapping = self._state_mapping(weights, new_state)
            with keras.StatelessScope(state_mapping=mapping, collect_losses=True) as scope:
                features = self.model.encode(x, training=True)
                if padded is None:
                    parts = self.model.unimodal_logits(features)
                    bias = ops.cast(self.model.head_bias(), "float32") / count
                    unimodal = ops.stack([ops.cast(parts[n], "float32") + bias for n in names])
                else:
                    unimodal = padded
                performance = ops.sum(
                    true_class_probability(ops.stop_gradient(unimodal), y, from_logits), axis=1
                )
                q = drop_probabilities(performance, self.q_base, self.lam)
                keep = ops.cast(keep_draw < (1.0 - q)[:, None], "float32")
                keep = ops.where(dropping, keep, ops.ones_like(keep))
                q_used = ops.where(dropping, q, ops.zeros_like(q))
                dropped = drop_features(features, names, keep, q_used, self._sizes)
                y_pred = self.model.fuse(dropped, training=True)
                losses = self.losses
            new_nt = [scope.get_current_value(v) for v in self.non_trainable_variables]
            loss, unscaled = self._compiled_loss(x, y, y_pred, sample_weight, losses)
            return loss, (unscaled, y_pred, new_nt, q, performance, keep)

        (_, aux), grads = self._value_and_grad(loss_fn)(trainable)
        loss, y_pred, new_non_trainable, q, performance, keep = aux
        size = ops.cast(batch, "float32")
        extras = {f"opm_q_{n}": q[i] for i, n in enumerate(names)}
        extras.update({f"opm_performance_{n}": performance[i] / size for i, n in enumerate(names)})
        extras.update({f"opm_dropped_{n}": 1.0 - ops.mean(keep[i]) for i, n in enumerate(names)})
        shapley = (
            self._shapley(trainable, non_trainable, x, y, y_pred) if self.log_shapley else None
        )
        return StepResult(list(grads), new_non_trainable, y_pred, loss, shapley, extras=extras)
