"""CGGM: classifier-guided gradient modulation (Guo et al., NeurIPS 2024).

Per training step, following the official code (``zrguo/CGGM@21e428c``, ``src/msatrain.py``
``train`` and ``src/eval_metrics.py`` ``cal_cos``), with φ_m modality m's features, W the
fused head's decision weights and W_m its block for modality m, c_m a classifier per modality
on the *detached* features (kernel A_m):

    L = L_task + λ·L_gm(t − 1)                  (no L_gm term at the first step)
    the classifiers train on Σ_m CE(c_m(stop_gradient(φ_m)), y)
    a_m = batch accuracy of c_m;  d_m = a_m − a_m(previous step)   (a_m(0) = 0)
    B_m = (Σ_k d_k + 1e-8 − d_m) / (Σ_k d_k + 1e-8)               the modulation coefficients
    ∇θ_m ← ρ·B_m·∇θ_m  on modality m's encoder
    every gradient of the model clipped to global norm ``clipnorm`` (official 0.8)
    L_gm(t) = (Σ_m |B_m| − Σ_m B_m·cos(A_m, W_m)) / M       (weights before this step's update)

with ρ = 1.3 and λ = 0.2 the official defaults. In the official code L_gm(t) is a graph over
*cloned* weights of step t added to step t + 1's loss, so its gradient reaches the fused
head's decision weights only (the classifiers' share is zeroed before they step), evaluated at
step t's weights and coefficients. Here that one-step lag is kept exactly: after each step the
trainer stores P_m = B_m·∂cos(A_m, b)/∂b at b = W_m (state), and the next step adds the
surrogate −(λ/M)·Σ_m ⟨W_m(θ), P_m⟩, whose gradient is the official one (W_m is linear in the
weights). Its value is logged as ``cggm_gm_loss`` (the official code adds it to the loss it
prints; ``loss`` here is L_task, comparable with ``val_loss``).

Choices and differences (each pinned by a test or the fixture's stated setting):

* The classifiers are one linear head per modality on its mean-pooled features, owned by the
  trainer (``classifiers``, saved with it), trained by the model's optimizer; the official
  classifier puts a 2-layer transformer before its ``out_layer`` and has its own Adam (5e-4).
  The fixture (``tests/fixtures/cggm_reference.json``) runs the official step with linear
  classifiers and one SGD learning rate for both.
* W_m: the official models fuse into one vector of the classifiers' width, so ``cos`` compares
  A_m with the whole ``out_layer``; here W_m is modality m's block of a linear late-fusion head
  (zoo ``concat``/``sum``: read off ``unimodal_logits``), the same thing when the head is shared
  (the fixture's sum of features) and the only shape-compatible reading for concatenation.
  ``lam > 0`` needs such a head; with ``lam=0`` any zoo model with per-modality encoders works
  (early fusion included).
* ρ·B_m scales every variable of modality m (``modality_variables()``); the official code
  scales ``encoders.{i}`` and leaves its per-modality input projections alone.
* B_m is the official expression: when Σ_k d_k is near 0 it is large and may be negative (an
  ascent direction for that encoder); the global-norm clip bounds the update, as officially.
  Logged: ``cggm_coeff_<m>``, ``cggm_accuracy_<m>``, ``cggm_cos_<m>``.
* Any number of modalities M ≥ 2 (the official scripts write out two or three).
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from keras_msam.shapley import class_indices
from keras_msam.trainers import _checks
from keras_msam.trainers import _unimodal_heads as heads
from keras_msam.trainers._balancing import BalancingTrainer
from keras_msam.trainers.base import StepResult

_DIFF_EPS = 1e-8  # the official diff_sum + 1e-8
_COS_EPS = 1e-8  # torch.nn.functional.cosine_similarity's eps
_CLIP_EPS = 1e-6  # torch.nn.utils.clip_grad_norm_'s eps


def _fail(message: str) -> ValueError:
    return ValueError(f"CGGM: {message}")


def modulation_coefficients(accuracy: Any, previous: Any) -> Any:
    """B_m = (Σ d + ε − d_m) / (Σ d + ε) with d = accuracy − previous (the official rule)."""
    diff = accuracy - previous
    total = ops.sum(diff) + _DIFF_EPS
    return (total - diff) / total


def cosine_and_pull(a: Any, b: Any) -> tuple[Any, Any]:
    """cos(a, b) of the flattened tensors and its gradient with respect to ``b``."""
    a = ops.reshape(ops.cast(a, "float32"), (-1,))
    b = ops.reshape(ops.cast(b, "float32"), (-1,))
    norm_a, norm_b = ops.norm(a), ops.norm(b)
    denominator = ops.maximum(norm_a * norm_b, _COS_EPS)
    cos = ops.sum(a * b) / denominator
    pull = a / denominator - cos * b / ops.maximum(norm_b * norm_b, _COS_EPS)
    return cos, pull


@keras.saving.register_keras_serializable(package="keras_msam")
class CGGM(BalancingTrainer):
    """Classifier-guided gradient modulation on a zoo model with two or more modalities.

    Args:
        model: A zoo model (per-modality encoders, ``encode``/``fuse``) whose modalities own
            trainable variables; with ``lam > 0`` its fusion must be linear late fusion (zoo
            ``concat`` or ``sum``).
        rho: ρ > 0, the scale of every modality's coefficient (official 1.3).
        lam: λ ≥ 0, the weight of the direction loss L_gm (official 0.2).
        clipnorm: Global-norm clip of the model's gradients after modulation (official 0.8);
            None leaves clipping to the optimizer.
        **kwargs: See `MultimodalTrainer` (Shapley logging options, ``nonfinite``, ``name``).

    Logs ``cggm_coeff_<modality>`` (B_m), ``cggm_accuracy_<modality>`` (its classifier's batch
    accuracy), ``cggm_cos_<modality>`` (cos(A_m, W_m); 0 without a linear head) and
    ``cggm_gm_loss`` (λ·L_gm added this step).
    """

    def __init__(
        self,
        model: keras.Model,
        rho: float = 1.3,
        lam: float = 0.2,
        clipnorm: float | None = 0.8,
        **kwargs: Any,
    ) -> None:
        super().__init__(model, **kwargs)
        self.rho = _checks.positive(rho, "CGGM rho", allow_zero=False)
        self.lam = _checks.positive(lam, "CGGM lam")
        self.clipnorm = (
            None if clipnorm is None else _checks.positive(clipnorm, "CGGM clipnorm", False)
        )
        names = self.modality_names
        if not any(self.structure.variable_groups.get(n) for n in names):
            raise _fail(
                f"it scales each modality's encoder gradients, and model {model.name!r} has no "
                "trainable modality-specific variables (e.g. early fusion of the raw inputs): "
                "nothing to modulate. Use Joint."
            )
        self.linear_head = bool(getattr(model, "supports_unimodal_logits", False))
        if self.lam > 0 and not self.linear_head:
            raise _fail(
                f"lam={self.lam:g} compares each classifier with its modality's block of the "
                f"fused decision layer, which needs linear late fusion (a zoo model with "
                f"'concat' or 'sum' fusion); model {model.name!r} has none. Pass lam=0 to "
                f"modulate gradients only."
            )
        self.classifiers = heads.build_heads(self, model, "cggm_classifier", _fail)
        self._widths = heads.feature_widths(self, model)
        count = len(names)
        self._previous_accuracy = self._add_state("cggm_previous_accuracy", (count,))
        self._has_previous = self._add_state("cggm_has_previous")
        self._gm_loss = self._add_state("cggm_gm_loss")
        self._pulls = [
            self._add_state(f"cggm_pull_{name}", (self._widths[name], self._num_classes()))
            for name in names
        ]
        self._extra_trackers = (
            [self._mean_metric(f"cggm_coeff_{n}") for n in names]
            + [self._mean_metric(f"cggm_accuracy_{n}") for n in names]
            + [self._mean_metric(f"cggm_cos_{n}") for n in names]
            + [self._mean_metric("cggm_gm_loss")]
        )

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "rho": self.rho,
            "lam": self.lam,
            "clipnorm": self.clipnorm,
        }

    # ------------------------------------------------------------------ pieces
    def _head_blocks(self) -> list[Any]:
        """W_m (width_m, C) of the linear late-fusion head, as a function of its weights."""
        blocks = []
        for name in self.modality_names:
            width = self._widths[name]
            features = {
                other: ops.eye(width) if other == name else ops.zeros((width, self._widths[other]))
                for other in self.modality_names
            }
            blocks.append(ops.cast(self.model.unimodal_logits(features)[name], "float32"))
        return blocks

    def _classifier_ids(self) -> set[int]:
        return {id(v) for head in self.classifiers for v in head.trainable_variables}

    # ------------------------------------------------------------------ step
    def compute_update(
        self, trainable: list[Any], non_trainable: list[Any], x: Any, y: Any, sample_weight: Any
    ) -> StepResult:
        names = self.modality_names
        count = len(names)
        pulls = [self._read(non_trainable, v) for v in self._pulls]
        has_previous = self._read(non_trainable, self._has_previous)

        def loss_fn(weights):
            mapping = self._state_mapping(weights, non_trainable)
            with keras.StatelessScope(state_mapping=mapping, collect_losses=True) as scope:
                features = self.model.encode(x, training=True)
                y_pred = self.model.fuse(features, training=True)
                losses = self.losses
                detached = {n: ops.stop_gradient(f) for n, f in features.items()}
                logits = heads.head_logits(self.classifiers, names, detached)
                blocks = self._head_blocks() if self.linear_head else []
            new_nt = [scope.get_current_value(v) for v in self.non_trainable_variables]
            task, unscaled = self._compiled_loss(x, y, y_pred, sample_weight, losses)
            total = task + self._scaled(ops.sum(heads.cross_entropies(logits, y, sample_weight)))
            if self.lam > 0:
                surrogate = sum(ops.sum(b * p) for b, p in zip(blocks, pulls, strict=True))
                total = total + self._scaled(-(self.lam / count) * has_previous * surrogate)
            return total, (unscaled, y_pred, new_nt, logits, blocks)

        (_, aux), grads = self._value_and_grad(loss_fn)(trainable)
        loss, y_pred, new_non_trainable, logits, blocks = aux
        with self._no_gradient():
            accuracy = self._accuracies(logits, y)
            previous = self._read(non_trainable, self._previous_accuracy)
            coeff = modulation_coefficients(accuracy, previous)
            groups = self._grad_groups()
            grads = [
                grad
                if group < 0
                else ops.cast(self.rho * coeff[group] * ops.cast(grad, "float32"), grad.dtype)
                for grad, group in zip(grads, groups, strict=True)
            ]
            if self.clipnorm is not None:
                grads = self._clipped(grads)
            cosines, new_pulls = self._cosines_and_pulls(trainable, blocks, coeff)
            gm_loss = (ops.sum(ops.abs(coeff)) - ops.sum(coeff * cosines)) / count
            logged_gm = self.lam * has_previous * self._read(non_trainable, self._gm_loss)
            new_non_trainable = self._write(
                new_non_trainable,
                [
                    (self._previous_accuracy, accuracy),
                    (self._has_previous, ops.ones(())),
                    (self._gm_loss, gm_loss),
                    *zip(self._pulls, new_pulls, strict=True),
                ],
            )
        extras = {f"cggm_coeff_{n}": coeff[i] for i, n in enumerate(names)}
        extras.update({f"cggm_accuracy_{n}": accuracy[i] for i, n in enumerate(names)})
        extras.update({f"cggm_cos_{n}": cosines[i] for i, n in enumerate(names)})
        extras["cggm_gm_loss"] = logged_gm
        shapley = (
            self._shapley(trainable, non_trainable, x, y, y_pred) if self.log_shapley else None
        )
        return StepResult(grads, new_non_trainable, y_pred, loss, shapley, extras=extras)

    def _accuracies(self, logits: Any, y: Any) -> Any:
        """(M,) batch accuracy of each classifier (unweighted, as the official code)."""
        num_classes = int(logits.shape[-1])
        if num_classes == 1:
            predicted = ops.cast(logits[..., 0] > 0, "int32")
        else:
            predicted = ops.cast(ops.argmax(logits, axis=-1), "int32")
        labels = ops.cast(class_indices(y, num_classes), "int32")
        return ops.mean(ops.cast(ops.equal(predicted, labels[None]), "float32"), axis=1)

    def _clipped(self, grads: list[Any]) -> list[Any]:
        """The model's gradients (not the classifiers') clipped to global norm ``clipnorm``."""
        classifier = self._classifier_ids()
        model_grads = [i for i, v in enumerate(self.trainable_variables) if id(v) not in classifier]
        norm = ops.sqrt(
            sum(ops.sum(ops.square(ops.cast(grads[i], "float32"))) for i in model_grads)
        )
        factor = ops.minimum(1.0, self.clipnorm / (norm + _CLIP_EPS))
        clipped = list(grads)
        for i in model_grads:
            clipped[i] = ops.cast(factor * ops.cast(grads[i], "float32"), grads[i].dtype)
        return clipped

    def _cosines_and_pulls(
        self, trainable: list[Any], blocks: list[Any], coeff: Any
    ) -> tuple[Any, list[Any]]:
        """cos(A_m, W_m) (M,) and P_m = B_m ∂cos/∂W_m, from the weights before the update."""
        names = self.modality_names
        if not blocks:
            return ops.zeros((len(names),)), [ops.zeros(p.shape) for p in self._pulls]
        index = {id(v): i for i, v in enumerate(self.trainable_variables)}
        cosines, pulls = [], []
        for m, (head, block) in enumerate(zip(self.classifiers, blocks, strict=True)):
            kernel = trainable[index[id(head.kernel)]]
            cos, pull = cosine_and_pull(kernel, block)
            cosines.append(cos)
            pulls.append(ops.reshape(coeff[m] * pull, tuple(block.shape)))
        return ops.stack(cosines), pulls
