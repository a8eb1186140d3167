"""Shapley values of modalities, on any backend, from one batched forward over coalitions.

A coalition S is the batch with every modality not in S replaced by its absence value (zeros by
default; per input for a modality of several inputs, see `keras_msam.absence`; same keys, same
shapes). Its value u(S) is a batch statistic of the model's predictions (accuracy by default).
Every Shapley estimate used here, exact or permutation-sampled, is a fixed linear map of the
coalition values, ``φ = W · u``, so a plan (which coalitions to evaluate, and ``W``) is built once
in numpy and a training step only runs the stacked forward and one small matrix product.

Exact (M ≤ threshold):  φ_m = Σ_{S ⊆ [M]∖{m}} |S|!(M−|S|−1)!/M! · (u(S ∪ {m}) − u(S)).
Sampled (M > threshold): φ_m = 1/P Σ_p (u(Pre_p(m) ∪ {m}) − u(Pre_p(m))) over P seeded
permutations drawn in antithetic pairs (a permutation and its reverse). Both satisfy
efficiency: Σ_m φ_m = u(all) − u(∅).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
from keras import ops

from keras_msam.absence import absent_leaf, map_leaves, rules_like

VALUE_FUNCTIONS = ("accuracy", "neg_loss", "true_class_prob")
EMPTY_CONVENTIONS = ("evaluate", "zero")
DEFAULT_THRESHOLD = 6
DEFAULT_NUM_SAMPLES = 16


@dataclass(frozen=True)
class CoalitionPlan:
    """Which coalitions to evaluate and how their values combine into Shapley values.

    Attributes:
        masks: Boolean array (K, M); row k marks the modalities present in coalition k.
        weights: Float array (M, K); ``phi = weights @ u``.
        exact: Whether the plan is the exact Shapley value (else permutation sampling).
    """

    masks: np.ndarray
    weights: np.ndarray
    exact: bool

    @property
    def num_coalitions(self) -> int:
        return int(self.masks.shape[0])


def _bits(coalition: int, num_modalities: int) -> np.ndarray:
    return np.array([(coalition >> i) & 1 for i in range(num_modalities)], dtype=bool)


def coalition_plan(
    num_modalities: int,
    empty: str = "evaluate",
    threshold: int = DEFAULT_THRESHOLD,
    num_samples: int = DEFAULT_NUM_SAMPLES,
    seed: int = 0,
) -> CoalitionPlan:
    """Builds the coalition plan for ``num_modalities`` modalities.

    Args:
        num_modalities: M ≥ 1.
        empty: ``"evaluate"`` runs the all-zero coalition; ``"zero"`` takes u(∅) = 0 (AGM's
            convention) and does not run it.
        threshold: Exact Shapley for M ≤ threshold, permutation sampling above.
        num_samples: Number of sampled permutations (rounded up to an even number: antithetic
            pairs); used only above the threshold.
        seed: Seed of the permutation sampler.

    Returns:
        A `CoalitionPlan`.
    """
    if num_modalities < 1:
        raise ValueError(f"Need at least one modality, got num_modalities={num_modalities}.")
    if empty not in EMPTY_CONVENTIONS:
        raise ValueError(
            f"Unknown empty-coalition convention {empty!r}; use one of {EMPTY_CONVENTIONS}."
        )
    if threshold < 1:
        raise ValueError(f"threshold must be >= 1, got {threshold}.")
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}.")
    m = num_modalities
    columns: dict[int, np.ndarray] = {}

    def add(coalition: int, modality: int, weight: float) -> None:
        if coalition == 0 and empty == "zero":
            return  # u(∅) = 0 contributes nothing
        columns.setdefault(coalition, np.zeros(m, np.float64))[modality] += weight

    if m <= threshold:
        for coalition in range(2**m):
            members = _bits(coalition, m)
            size = int(members.sum())
            for modality in range(m):
                if members[modality]:
                    weight = math.factorial(size - 1) * math.factorial(m - size) / math.factorial(m)
                    add(coalition, modality, weight)
                else:
                    weight = math.factorial(size) * math.factorial(m - size - 1) / math.factorial(m)
                    add(coalition, modality, -weight)
        exact = True
    else:
        rng = np.random.default_rng(seed)
        pairs = (num_samples + 1) // 2
        permutations = []
        for _ in range(pairs):
            order = rng.permutation(m)
            permutations += [order, order[::-1]]
        for order in permutations:
            before = 0
            for modality in order:
                after = before | (1 << int(modality))
                add(after, int(modality), 1.0 / len(permutations))
                add(before, int(modality), -1.0 / len(permutations))
                before = after
        exact = False
    coalitions = sorted(columns)
    masks = np.stack([_bits(c, m) for c in coalitions])
    weights = np.stack([columns[c] for c in coalitions], axis=1).astype(np.float32)
    return CoalitionPlan(masks=masks, weights=weights, exact=exact)


def stack_coalitions(
    x: dict[str, Any],
    names: tuple[str, ...],
    masks: np.ndarray,
    absence: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Stacks one masked copy of the batch per coalition along the batch axis.

    Returns a dict with the same (nested) keys; each array has shape (K·B, ...),
    coalition-major, and holds the input's absence value wherever its modality is absent from
    the coalition (``absence``: per-modality rules, `keras_msam.absence`; defaults when None:
    zeros, and a first-position-kept mask for inputs named ``*mask``).
    """
    absence = absence or {}
    stacked = {}
    for index, name in enumerate(names):
        present = masks[:, index]

        def stack(value: Any, rule: Any, present: np.ndarray = present) -> Any:
            value = ops.convert_to_tensor(value)
            keep = ops.convert_to_tensor(present.reshape((len(present),) + (1,) * len(value.shape)))
            absent = ops.expand_dims(absent_leaf(value, rule), 0)
            tiled = ops.where(keep, ops.expand_dims(value, 0), absent)
            return ops.reshape(tiled, (-1,) + tuple(value.shape[1:]))

        stacked[name] = map_leaves(stack, x[name], rules_like(x[name], absence.get(name)))
    return stacked


def unstack_coalitions(outputs: Any, num_coalitions: int) -> Any:
    """Reshapes stacked outputs (K·B, ...) back to (K, B, ...)."""
    return ops.reshape(outputs, (num_coalitions, -1) + tuple(outputs.shape[1:]))


def class_indices(y: Any, num_classes: int) -> Any:
    """Integer labels of shape (B,) from sparse (B,), (B, 1) or one-hot (B, C) targets."""
    y = ops.convert_to_tensor(y)
    if num_classes > 1 and len(y.shape) >= 2 and y.shape[-1] == num_classes:
        return ops.argmax(y, axis=-1)
    return ops.cast(ops.reshape(y, (-1,)), "int32")


def coalition_values(
    outputs: Any, y: Any, value: str = "accuracy", from_logits: bool | None = True
) -> Any:
    """u(S) for every coalition from stacked outputs of shape (K, B, C).

    Args:
        outputs: Model outputs per coalition, (K, B, C); C = 1 means binary classification.
        y: Targets for the batch: (B,), (B, 1) or one-hot (B, C).
        value: ``"accuracy"`` (batch accuracy), ``"true_class_prob"`` (mean probability of the
            true class) or ``"neg_loss"`` (minus the mean cross-entropy).
        from_logits: Whether ``outputs`` are logits (else probabilities). Needed for the two
            probability-based values; accuracy does not depend on it.

    Returns:
        A float32 tensor of shape (K,).
    """
    if value not in VALUE_FUNCTIONS:
        raise ValueError(f"Unknown Shapley value function {value!r}; use one of {VALUE_FUNCTIONS}.")
    outputs = ops.cast(outputs, "float32")
    num_classes = int(outputs.shape[-1])
    if value != "accuracy" and from_logits is None:
        raise ValueError(
            f"value={value!r} needs to know whether the model outputs logits or probabilities; "
            "pass `from_logits=True/False` (or compile with a loss that says so)."
        )
    if num_classes == 1:
        target = ops.reshape(ops.cast(ops.convert_to_tensor(y), "float32"), (1, -1))
        scores = outputs[..., 0]
        prob = ops.sigmoid(scores) if from_logits else scores
        if value == "accuracy":
            threshold = 0.0 if from_logits is not False else 0.5
            predicted = ops.cast(scores > threshold, "float32")
            return ops.mean(ops.cast(ops.equal(predicted, target), "float32"), axis=1)
        true_prob = target * prob + (1.0 - target) * (1.0 - prob)
    else:
        labels = class_indices(y, num_classes)
        if value == "accuracy":
            hits = ops.equal(
                ops.argmax(outputs, axis=-1), ops.expand_dims(ops.cast(labels, "int32"), 0)
            )
            return ops.mean(ops.cast(hits, "float32"), axis=1)
        prob = ops.softmax(outputs, axis=-1) if from_logits else outputs
        one_hot = ops.one_hot(labels, num_classes, dtype="float32")
        true_prob = ops.sum(prob * ops.expand_dims(one_hot, 0), axis=-1)
    if value == "true_class_prob":
        return ops.mean(true_prob, axis=1)
    return ops.mean(ops.log(ops.clip(true_prob, 1e-7, 1.0)), axis=1)


def shapley_from_values(values: Any, plan: CoalitionPlan) -> Any:
    """φ (M,) = W · u for coalition values ``values`` (K,)."""
    return ops.matmul(ops.convert_to_tensor(plan.weights), ops.cast(values, "float32"))


def shares_and_dominant(phi: Any) -> tuple[Any, Any]:
    """Shares v = relu(φ)/Σ relu(φ) (uniform when the sum is 0) and the dominant index.

    The dominant modality is argmax v; ties go to the first name in sorted order.
    """
    positive = ops.relu(ops.cast(phi, "float32"))
    total = ops.sum(positive)
    count = positive.shape[0]
    shares = ops.where(
        total > 0, positive / ops.maximum(total, 1e-12), ops.ones_like(positive) / count
    )
    positions = ops.arange(count, dtype="int32")
    dominant = ops.min(ops.where(shares >= ops.max(shares), positions, count))
    return shares, dominant


def from_logits_of_loss(loss: Any) -> bool | None:
    """Whether a compiled loss reads its predictions as logits (None when it cannot be told)."""
    if loss is None:
        return None
    if isinstance(loss, str):
        return False if "crossentropy" in loss else None
    flag = getattr(loss, "from_logits", None)
    if flag is None and hasattr(loss, "fn"):
        flag = getattr(loss, "_fn_kwargs", {}).get("from_logits")
    return None if flag is None else bool(flag)


def shapley_values(
    model: keras.Model,
    x: Any,
    y: Any = None,
    value: str = "accuracy",
    empty: str = "evaluate",
    threshold: int = DEFAULT_THRESHOLD,
    num_samples: int = DEFAULT_NUM_SAMPLES,
    seed: int = 0,
    from_logits: bool | None = None,
    absence: dict[str, Any] | None = None,
) -> dict[str, float]:
    """Shapley value of each modality of ``model`` on the batch ``(x, y)`` or a data set.

    All coalitions run as one forward pass in inference mode (stacked along the batch axis).
    For a data set the values are computed per batch and averaged, weighted by batch size:
    the coalition values are means over examples and Shapley values are linear in them, so
    this equals the values over the whole set.

    Args:
        model: A Keras model (or keras-msam trainer) with dict inputs keyed by modality name.
        x: The batch, ``{modality: array}``, or a data set of ``(inputs, labels)`` batches
            (``keras.utils.PyDataset``, ``tf.data.Dataset``, torch ``DataLoader``).
        y: The batch's labels; None for a data set.
        value: Coalition value: ``"accuracy"``, ``"neg_loss"`` or ``"true_class_prob"``.
        empty: ``"evaluate"`` (run the all-zero coalition) or ``"zero"`` (u(∅) = 0).
        threshold: Exact for M ≤ threshold, permutation sampling above.
        num_samples: Sampled permutations above the threshold.
        seed: Seed of the permutation sampler.
        from_logits: Whether the model outputs logits; read from its compiled loss when None.
        absence: Absence rules for this call (`keras_msam.absence`), over a trainer's own
            ``absence`` and the defaults.

    Returns:
        ``{modality: φ_m}`` as Python floats.
    """
    from keras_msam.data_sources import is_array_input, iterate_batches
    from keras_msam.modalities import structure_of, validate_inputs

    inner = getattr(model, "model", model)
    structure = structure_of(model, absence)
    if from_logits is None:
        from_logits = from_logits_of_loss(getattr(model, "loss", None))
    plan = coalition_plan(len(structure.names), empty, threshold, num_samples, seed)

    def batch_phi(batch_x: dict[str, Any], batch_y: Any) -> np.ndarray:
        validate_inputs(batch_x, structure, where="x")
        stacked = stack_coalitions(batch_x, structure.names, plan.masks, structure.absence)
        outputs = unstack_coalitions(inner(stacked, training=False), plan.num_coalitions)
        phi = shapley_from_values(coalition_values(outputs, batch_y, value, from_logits), plan)
        return np.asarray(ops.convert_to_numpy(phi), dtype=np.float64)

    if is_array_input(x):
        if y is None:
            raise ValueError("shapley_values: arrays {modality: array} need their labels y.")
        phi = batch_phi(x, y)
    else:
        total, count = np.zeros(len(structure.names)), 0
        for batch_x, batch_y in iterate_batches(x, y):
            total += batch_phi(batch_x, batch_y) * len(batch_y)
            count += len(batch_y)
        if count == 0:
            raise ValueError("shapley_values: the data set yielded no examples.")
        phi = total / count
    return {name: float(phi[i]) for i, name in enumerate(structure.names)}
