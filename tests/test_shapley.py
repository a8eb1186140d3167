"""Shapley values: exactness against brute force, sampling, shares, value functions."""

from __future__ import annotations

import itertools
import math

import keras
import numpy as np
import pytest
from conftest import small_av_model, small_batch
from keras import ops

import keras_msam
from keras_msam.shapley import (
    coalition_plan,
    coalition_values,
    shapley_from_values,
    shares_and_dominant,
    stack_coalitions,
)


def brute_force_shapley(value_of, m: int) -> np.ndarray:
    """Average marginal contribution over all M! orderings (independent of the plan code)."""
    phi = np.zeros(m)
    for order in itertools.permutations(range(m)):
        present: frozenset[int] = frozenset()
        for modality in order:
            phi[modality] += value_of(present | {modality}) - value_of(present)
            present = present | {modality}
    return phi / math.factorial(m)


def _coalition_index(plan, members: frozenset[int]) -> int:
    target = np.array([i in members for i in range(plan.masks.shape[1])])
    return int(np.flatnonzero((plan.masks == target).all(axis=1))[0])


@pytest.mark.parametrize("m", [2, 3, 4])
def test_exact_plan_matches_brute_force_and_efficiency(m):
    rng = np.random.default_rng(m)
    table = {
        frozenset(s): rng.uniform()
        for k in range(m + 1)
        for s in itertools.combinations(range(m), k)
    }
    plan = coalition_plan(m)
    assert plan.exact and plan.num_coalitions == 2**m
    u = np.array([table[frozenset(np.flatnonzero(mask))] for mask in plan.masks], np.float32)
    phi = ops.convert_to_numpy(shapley_from_values(u, plan))
    np.testing.assert_allclose(phi, brute_force_shapley(table.__getitem__, m), atol=1e-6)
    np.testing.assert_allclose(
        phi.sum(), table[frozenset(range(m))] - table[frozenset()], atol=1e-6
    )


@pytest.mark.parametrize("m", [2, 3, 4])
def test_shapley_values_of_a_model_match_brute_force(m):
    names = [f"m{i}" for i in range(m)]
    inputs = {n: keras.Input((3,), name=n) for n in names}
    hidden = keras.layers.Concatenate()(
        [keras.layers.Dense(4, name=f"{n}_enc")(inputs[n]) for n in names]
    )
    model = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Activation("tanh")(hidden)))
    rng = np.random.default_rng(0)
    x = {n: rng.standard_normal((64, 3)).astype("float32") for n in names}
    y = rng.integers(0, 3, size=64)

    def value_of(members):
        zeroed = {n: x[n] if i in members else np.zeros_like(x[n]) for i, n in enumerate(names)}
        logits = ops.convert_to_numpy(model(zeroed, training=False))
        probs = np.exp(logits - logits.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        return probs[np.arange(64), y].mean()

    phi = keras_msam.shapley_values(model, x, y, value="true_class_prob", from_logits=True)
    expected = brute_force_shapley(value_of, m)
    np.testing.assert_allclose([phi[n] for n in names], expected, atol=1e-5)
    np.testing.assert_allclose(
        sum(phi.values()), value_of(set(range(m))) - value_of(set()), atol=1e-5
    )


def test_sampled_estimate_converges_to_exact():
    m = 7
    rng = np.random.default_rng(0)
    table = {
        frozenset(s): rng.uniform()
        for k in range(m + 1)
        for s in itertools.combinations(range(m), k)
    }
    exact = brute_force_shapley(table.__getitem__, m)
    errors = []
    for samples in (16, 256, 4096):
        plan = coalition_plan(m, threshold=6, num_samples=samples, seed=3)
        assert not plan.exact
        u = np.array([table[frozenset(np.flatnonzero(mask))] for mask in plan.masks], np.float32)
        phi = ops.convert_to_numpy(shapley_from_values(u, plan))
        # Every permutation estimate is efficient: Σφ = u(all) − u(∅) exactly.
        np.testing.assert_allclose(
            phi.sum(), table[frozenset(range(m))] - table[frozenset()], atol=1e-5
        )
        errors.append(np.abs(phi - exact).max())
    assert errors[-1] < 0.02
    assert errors[0] > 4 * errors[-1]  # ~1/sqrt(P): 256x the samples, ~16x smaller error


def test_sampling_is_seeded():
    a = coalition_plan(8, num_samples=10, seed=1)
    b = coalition_plan(8, num_samples=10, seed=1)
    c = coalition_plan(8, num_samples=10, seed=2)
    np.testing.assert_array_equal(a.weights, b.weights)
    assert a.weights.shape != c.weights.shape or not np.array_equal(a.weights, c.weights)


def test_empty_zero_convention_drops_the_empty_coalition():
    plan = coalition_plan(2, empty="zero")
    assert plan.num_coalitions == 3 and plan.masks.any(axis=1).all()
    u = {(True, False): 0.6, (False, True): 0.3, (True, True): 0.8}
    values = np.array([u[tuple(mask)] for mask in plan.masks], np.float32)
    phi = ops.convert_to_numpy(shapley_from_values(values, plan))
    # AGM's two-modality formula with u(∅) = 0.
    np.testing.assert_allclose(phi, [0.5 * (0.8 - 0.3 + 0.6), 0.5 * (0.8 - 0.6 + 0.3)], atol=1e-6)


def test_model_ignoring_a_modality_gets_zero_value_and_zero_share():
    audio = keras.Input((4,), name="audio")
    visual = keras.Input((4,), name="visual")
    ignored = keras.layers.Lambda(lambda t: 0.0 * t)(visual)
    model = keras.Model({"audio": audio, "visual": visual}, keras.layers.Add()([audio, ignored]))
    rng = np.random.default_rng(0)
    x = {
        "audio": rng.standard_normal((32, 4)).astype("float32"),
        "visual": rng.standard_normal((32, 4)).astype("float32"),
    }
    y = np.argmax(x["audio"], axis=-1)
    phi = keras_msam.shapley_values(model, x, y)
    assert phi["visual"] == 0.0
    assert phi["audio"] > 0.5
    shares, dominant = shares_and_dominant(np.array([phi["audio"], phi["visual"]], np.float32))
    np.testing.assert_allclose(ops.convert_to_numpy(shares), [1.0, 0.0])
    assert int(ops.convert_to_numpy(dominant)) == 0


def test_shares_sum_to_one_ties_go_first_and_nonpositive_is_uniform():
    shares, dominant = shares_and_dominant(np.array([0.2, -0.1, 0.6], np.float32))
    np.testing.assert_allclose(ops.convert_to_numpy(shares), [0.25, 0.0, 0.75], atol=1e-6)
    assert int(ops.convert_to_numpy(dominant)) == 2
    shares, dominant = shares_and_dominant(np.array([0.3, 0.3, 0.1], np.float32))
    np.testing.assert_allclose(float(ops.convert_to_numpy(ops.sum(shares))), 1.0, atol=1e-6)
    assert int(ops.convert_to_numpy(dominant)) == 0
    shares, dominant = shares_and_dominant(np.array([-0.2, 0.0], np.float32))
    np.testing.assert_allclose(ops.convert_to_numpy(shares), [0.5, 0.5])
    assert int(ops.convert_to_numpy(dominant)) == 0


def test_value_functions_match_numpy():
    rng = np.random.default_rng(1)
    logits = rng.standard_normal((3, 10, 4)).astype("float32")
    y = rng.integers(0, 4, size=10)
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    true_prob = probs[:, np.arange(10), y]
    acc = (logits.argmax(-1) == y).mean(axis=1)
    got = {
        v: ops.convert_to_numpy(coalition_values(logits, y, v, True))
        for v in ("accuracy", "true_class_prob", "neg_loss")
    }
    np.testing.assert_allclose(got["accuracy"], acc, atol=1e-6)
    np.testing.assert_allclose(got["true_class_prob"], true_prob.mean(1), atol=1e-5)
    np.testing.assert_allclose(got["neg_loss"], np.log(true_prob).mean(1), atol=1e-5)
    one_hot = np.eye(4)[y]
    np.testing.assert_allclose(
        ops.convert_to_numpy(coalition_values(probs, one_hot, "true_class_prob", False)),
        true_prob.mean(1),
        atol=1e-5,
    )


def test_stack_coalitions_zeroes_absent_modalities():
    x, _ = small_batch(batch=5)
    plan = coalition_plan(2)
    stacked = stack_coalitions(x, ("audio", "visual"), plan.masks)
    audio = ops.convert_to_numpy(stacked["audio"]).reshape(plan.num_coalitions, 5, 6)
    for k, mask in enumerate(plan.masks):
        expected = x["audio"] if mask[0] else np.zeros_like(x["audio"])
        np.testing.assert_array_equal(audio[k], expected)


def test_bad_arguments_raise_clear_errors():
    model = small_av_model()
    x, y = small_batch()
    with pytest.raises(ValueError, match="Unknown Shapley value function"):
        keras_msam.shapley_values(model, x, y, value="f1")
    with pytest.raises(ValueError, match="empty-coalition"):
        coalition_plan(2, empty="skip")
    with pytest.raises(ValueError, match="missing modality key"):
        keras_msam.shapley_values(model, {"audio": x["audio"]}, y)
    with pytest.raises(ValueError, match="from_logits"):
        keras_msam.shapley_values(model, x, y, value="neg_loss")


def test_modality_accuracies_zero_the_other_modalities():
    audio = keras.Input((4,), name="audio")
    visual = keras.Input((4,), name="visual")
    ignored = keras.layers.Lambda(lambda t: 0.0 * t)(visual)
    model = keras.Model({"audio": audio, "visual": visual}, keras.layers.Add()([audio, ignored]))
    rng = np.random.default_rng(3)
    x = {k: rng.standard_normal((300, 4)).astype("float32") for k in ("audio", "visual")}
    y = np.argmax(x["audio"], axis=-1)
    result = keras_msam.modality_accuracies(model, x, y, batch_size=64)
    assert result["multimodal"] == 1.0 and result["audio"] == 1.0
    assert result["visual"] == pytest.approx(np.mean(y == 0))  # all-zero logits → class 0
