"""DecisionWeighting (our decision-layer weighting): the gain update against numpy, the neutral
step against Joint, the gained fusion in training, predict/evaluate and Shapley coalitions,
training on the embedded data, errors and saving. Runs on the backend of KERAS_BACKEND."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from conftest import (
    assert_resume_equals_never_stopping,
    compile_trainer,
    copy_state,
    small_av_model,
    small_batch,
    weights_of,
)

import keras_msam
import zoo
from keras_msam.trainers.decision_weighting import (
    decision_gains,
    ema_update,
    split_statistics,
)
from zoo.models.base import MultimodalClassifier
from zoo.models.fusions import late_fusion

DIMS = {"audio": 6, "visual": 4}


def _np(t):
    return np.asarray(keras.ops.convert_to_numpy(t), dtype=np.float64)


def _tiny(fusion="concat", num_classes=4, name="tiny", **options):
    """A tiny zoo model with linear late fusion: Dense(5, tanh) encoders, a linear head."""
    encoders = {}
    for modality, dim in DIMS.items():
        inputs = keras.Input((dim,), name=modality)
        encoders[modality] = keras.Model(
            inputs, keras.layers.Dense(5, activation="tanh", name=f"{modality}_dense")(inputs)
        )
    return MultimodalClassifier(encoders, late_fusion(fusion, num_classes, **options), name=name)


def _parts(model, x):
    """u_m = W_m φ_m (numpy, (M, B, C)) and the head bias b, read off the model."""
    features = model.encode(x, training=False)
    parts = model.unimodal_logits(features)
    return np.stack([_np(parts[n]) for n in ("audio", "visual")]), _np(model.head_bias())


# ------------------------------------------------------------------- numpy reference


def _np_statistics(parts, bias, y, capability, per_class):
    count, _, num_classes = parts.shape
    logits = parts + bias / count
    if capability == "accuracy":
        score = (logits.argmax(-1) == y[None]).astype(float)
    else:
        prob = np.exp(logits - logits.max(-1, keepdims=True))
        prob /= prob.sum(-1, keepdims=True)
        score = prob[:, np.arange(len(y)), y]
    if not per_class:
        return np.abs(parts).mean(axis=(1, 2))[:, None], score.mean(1)[:, None], np.ones(1, bool)
    scale = np.abs(parts).mean(axis=1)
    present = np.array([np.any(y == k) for k in range(num_classes)])
    cap = np.array(
        [
            [score[m, y == k].mean() if present[k] else 0.0 for k in range(num_classes)]
            for m in range(count)
        ]
    )
    return scale, cap, present


def _np_gains(scale, cap, beta, max_gain):
    scale, cap = np.maximum(scale, 1e-6), np.maximum(cap, 1e-6)  # as the trainer clamps
    sigma = scale / scale.sum(0)
    kappa = cap / cap.sum(0)
    raw = (kappa / sigma) ** beta
    return np.clip(raw * scale.sum(0) / (raw * scale).sum(0), 1 / max_gain, max_gain)


def test_gain_equation_matches_a_hand_computation():
    scale = np.array([[3.0], [1.0]])
    cap = np.array([[0.5], [0.8]])
    # β = 1: gained shares equal capability shares, total scale kept.
    gains = _np(decision_gains(scale, cap, 1.0, 100.0))
    kappa = cap / cap.sum()
    np.testing.assert_allclose(gains, kappa * 4.0 / scale, rtol=1e-5)  # (κ_m / σ_m)
    np.testing.assert_allclose((gains * scale).sum(), 4.0, rtol=1e-5)
    # β = 0.5 by hand: κ = (5/13, 8/13), σ = (3/4, 1/4)
    raw = np.sqrt(np.array([5 / 13 / 0.75, 8 / 13 / 0.25]))
    want = raw * 4.0 / (raw * np.array([3.0, 1.0])).sum()
    np.testing.assert_allclose(_np(decision_gains(scale, cap, 0.5, 4.0))[:, 0], want, rtol=1e-5)
    # clipping, β = 0 (neutral), and per-class columns normalised separately
    np.testing.assert_allclose(_np(decision_gains(scale, cap, 1.0, 1.5)), [[1 / 1.5], [1.5]])
    np.testing.assert_array_equal(_np(decision_gains(scale, cap, 0.0, 4.0)), np.ones((2, 1)))
    wide = np.array([[3.0, 1.0, 2.0], [1.0, 2.0, 2.0]])
    wide_cap = np.array([[0.5, 0.2, 0.9], [0.8, 0.6, 0.1]])
    np.testing.assert_allclose(
        _np(decision_gains(wide, wide_cap, 0.7, 4.0)),
        _np_gains(wide, wide_cap, 0.7, 4.0),
        rtol=1e-5,
    )
    # EMA: first value is the batch's, absent entries keep theirs
    old, new = np.array([[1.0, 2.0]]), np.array([[3.0, 5.0]])
    present, seen = np.array([True, False]), np.array([True, True])
    np.testing.assert_allclose(_np(ema_update(old, new, present, seen, 0.75)), [[1.5, 2.0]])
    np.testing.assert_allclose(
        _np(ema_update(old, new, np.array([True, True]), np.array([False, True]), 0.75)),
        [[3.0, 2.75]],
    )


@pytest.mark.parametrize("capability", ["accuracy", "true_class_prob"])
@pytest.mark.parametrize("per_class", [False, True])
def test_batch_statistics_match_numpy(capability, per_class):
    rng = np.random.default_rng(0)
    parts = rng.standard_normal((2, 12, 4)).astype("float32")
    bias = rng.standard_normal(4).astype("float32")
    y = np.array([0, 1, 1, 2, 0, 1, 2, 0, 1, 1, 2, 0])  # class 3 absent
    scale_sum, cap_sum, counts, batch = (
        _np(t) for t in split_statistics(parts, bias, y, capability, per_class)
    )
    scale, cap, present = _np_statistics(
        parts.astype(np.float64), bias.astype(np.float64), y, capability, per_class
    )
    np.testing.assert_allclose(scale_sum / batch, scale, rtol=1e-5)
    np.testing.assert_allclose(cap_sum / np.maximum(counts, 1), cap, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(counts > 0, present)


@pytest.mark.parametrize("per_class", [False, True])
def test_trainer_state_follows_the_update_equations(per_class):
    beta, mu, max_gain = 0.5, 0.6, 4.0
    trainer = compile_trainer(
        keras_msam.DecisionWeighting(
            _tiny("sum" if per_class else "concat"),
            strength=beta,
            momentum=mu,
            max_gain=max_gain,
            per_class=per_class,
            log_shapley=False,
        )
    )
    first, second = small_batch(seed=0), small_batch(seed=1)
    second = (second[0], np.where(second[1] == 3, 2, second[1]))  # class 3 absent from it
    scale = cap = seen = None
    for step, (x, y) in enumerate((first, second)):
        parts, bias = _parts(trainer.model, x)  # the weights this step's forward sees
        s, c, present = _np_statistics(parts, bias, y, "accuracy", per_class)
        if step == 0:
            scale, cap, seen = s, np.where(present, c, 0.0), present.copy()
        else:
            scale = mu * scale + (1 - mu) * s
            cap = np.where(present, np.where(seen, mu * cap + (1 - mu) * c, c), cap)
            seen |= present
        logs = trainer.train_on_batch(x, y, return_dict=True)
    np.testing.assert_allclose(_np(trainer._scale), scale, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(_np(trainer._capability), cap, rtol=1e-4, atol=1e-7)
    want = np.where(seen, _np_gains(scale, cap, beta, max_gain), 1.0)
    np.testing.assert_allclose(trainer.gains, want, rtol=1e-4)
    assert not np.allclose(want, 1.0)
    np.testing.assert_allclose(
        [logs["gain_audio"], logs["gain_visual"]], want.mean(axis=1), rtol=1e-4
    )


# ------------------------------------------------------------------- training with gains


def test_neutral_gains_reproduce_the_joint_step():
    x, y = small_batch()
    first, second = _tiny(), _tiny()
    copy_state(first, second)
    dlw = compile_trainer(
        keras_msam.DecisionWeighting(first, strength=0.0, log_shapley=False), momentum=0.9
    )
    joint = compile_trainer(keras_msam.Joint(second, log_shapley=False), momentum=0.9)
    for _ in range(3):
        a = dlw.train_on_batch(x, y, return_dict=True)
        b = joint.train_on_batch(x, y, return_dict=True)
        assert a["loss"] == b["loss"]
    for u, v in zip(weights_of(dlw), weights_of(joint)):
        np.testing.assert_array_equal(u, v)
    np.testing.assert_array_equal(dlw.gains, np.ones((2, 1)))


def test_the_training_loss_and_head_update_use_the_gains():
    x, y = small_batch()
    lr = 0.1
    trainer = compile_trainer(keras_msam.DecisionWeighting(_tiny(), log_shapley=False), lr=lr)
    gains = np.array([[0.5], [2.0]], "float32")
    trainer._gains.assign(gains)
    model = trainer.model
    features = {k: _np(v) for k, v in model.encode(x).items()}
    kernel, bias = _np(model.fusion.head.kernel), _np(model.fusion.head.bias)
    logits = (
        gains[0, 0] * features["audio"] @ kernel[:5]
        + gains[1, 0] * features["visual"] @ kernel[5:]
        + bias
    )
    prob = np.exp(logits - logits.max(1, keepdims=True))
    prob /= prob.sum(1, keepdims=True)
    loss = -np.log(prob[np.arange(len(y)), y]).mean()
    residual = (prob - np.eye(4)[y]) / len(y)  # ∂loss/∂logits
    logs = trainer.train_on_batch(x, y, return_dict=True)
    assert logs["loss"] == pytest.approx(loss, rel=1e-5)
    grad_kernel = np.concatenate(
        [
            gains[0, 0] * features["audio"].T @ residual,
            gains[1, 0] * features["visual"].T @ residual,
        ]
    )
    np.testing.assert_allclose(
        _np(model.fusion.head.kernel), kernel - lr * grad_kernel, rtol=1e-4, atol=1e-6
    )
    np.testing.assert_allclose(
        _np(model.fusion.head.bias), bias - lr * residual.sum(0), rtol=1e-4, atol=1e-6
    )


@pytest.mark.parametrize("per_class", [False, True])
def test_predict_and_evaluate_use_the_gains(per_class):
    x, y = small_batch()
    trainer = compile_trainer(keras_msam.DecisionWeighting(_tiny(), per_class=per_class))
    rng = np.random.default_rng(3)
    gains = rng.uniform(0.3, 3.0, size=(2, 4 if per_class else 1)).astype("float32")
    trainer._gains.assign(gains)
    model = trainer.model
    features = {k: _np(v) for k, v in model.encode(x).items()}
    kernel, bias = _np(model.fusion.head.kernel), _np(model.fusion.head.bias)
    manual = (
        gains[0] * (features["audio"] @ kernel[:5])
        + gains[1] * (features["visual"] @ kernel[5:])
        + bias
    )
    np.testing.assert_allclose(trainer.predict(x, verbose=0), manual, rtol=1e-5, atol=1e-5)
    assert not np.allclose(_np(model(x)), manual, atol=1e-3)  # the wrapped model is plain
    # evaluate, with the Shapley logs on (coalitions on features: the full one is the y_pred)
    prob = np.exp(manual - manual.max(1, keepdims=True))
    prob /= prob.sum(1, keepdims=True)
    loss = -np.log(prob[np.arange(len(y)), y]).mean()
    results = trainer.evaluate(x, y, verbose=0, return_dict=True)
    assert results["loss"] == pytest.approx(loss, rel=1e-5)
    assert results["accuracy"] == pytest.approx(np.mean(manual.argmax(1) == y))
    assert not any(key.startswith("gain_") for key in results)
    # the feature coalitions equal input coalitions (which run the gained `call`)
    state = (
        [v.value for v in trainer.trainable_variables],
        [v.value for v in trainer.non_trainable_variables],
    )
    outputs = _np(trainer._feature_coalition_outputs(*state, x))
    trainer.coalitions, trainer._feature_coalitions = "inputs", False
    by_inputs = _np(trainer._coalition_outputs(*state, x))
    np.testing.assert_allclose(outputs, by_inputs, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(outputs[-1], manual, rtol=1e-5, atol=1e-5)


def test_gains_off_at_inference_keep_the_plain_model():
    x, y = small_batch()
    trainer = compile_trainer(keras_msam.DecisionWeighting(_tiny(), gains_at_inference=False))
    trainer._gains.assign(np.array([[0.5], [2.0]], "float32"))
    plain = _np(trainer.model(x))
    np.testing.assert_allclose(trainer.predict(x, verbose=0), plain, rtol=1e-5, atol=1e-6)
    results = trainer.evaluate(x, y, verbose=0, return_dict=True)
    assert results["accuracy"] == pytest.approx(np.mean(plain.argmax(1) == y))
    trainer.train_on_batch(x, y)  # the training forward still uses the gains


def test_trains_the_embedded_default_with_finite_loss():
    data = zoo.datasets.imbalanced_av.generate(num_train=256, num_validation=64, num_test=8)
    model = zoo.models.create("late_fusion_av_cnn", num_classes=10, width=8)
    trainer = compile_trainer(keras_msam.DecisionWeighting(model), lr=0.05, momentum=0.9)
    history = trainer.fit(*data["train"], batch_size=64, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    assert all(np.all(np.isfinite(w)) for w in weights_of(trainer))
    for name in ("audio", "visual"):
        assert np.all(np.isfinite(history.history[f"gain_{name}"]))
    gains = trainer.gains
    assert gains.shape == (2, 1) and np.all((gains >= 0.25) & (gains <= 4.0))
    assert not np.allclose(gains, 1.0)
    results = trainer.evaluate(*data["validation"], verbose=0, return_dict=True)
    assert np.isfinite(results["loss"])


# ------------------------------------------------------------------- errors and saving


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"strength": -1}, "strength"),
        ({"strength": "high"}, "strength"),
        ({"momentum": 1.0}, "momentum"),
        ({"momentum": -0.1}, "momentum"),
        ({"max_gain": 0.5}, "max_gain"),
        ({"max_gain": float("inf")}, "max_gain"),
        ({"capability": "loss"}, "capability"),
        ({"per_class": "yes"}, "per_class"),
        ({"gains_at_inference": 1}, "gains_at_inference"),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        keras_msam.DecisionWeighting(_tiny(), **kwargs)


def test_models_without_linear_late_fusion_are_refused():
    with pytest.raises(ValueError, match="linear late fusion.*'small_av'"):
        keras_msam.DecisionWeighting(small_av_model())
    gated = _tiny("gated", name="gated_tiny", hidden=8)
    with pytest.raises(ValueError, match="linear late fusion.*'gated_tiny'"):
        keras_msam.DecisionWeighting(gated)
    inputs = keras.Input((4,), name="audio")
    single = keras.Model({"audio": inputs}, keras.layers.Dense(2)(inputs))
    with pytest.raises(ValueError, match="two or more"):
        keras_msam.DecisionWeighting(single)


def test_a_model_that_outputs_probabilities_is_refused():
    trainer = keras_msam.DecisionWeighting(_tiny())
    trainer.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    x, y = small_batch()
    with pytest.raises(ValueError, match="logits"):
        trainer.train_on_batch(x, y)


def test_save_load_and_continue_equals_never_stopping(tmp_path):
    x, _ = small_batch()
    kwargs = {"strength": 0.7, "momentum": 0.5, "max_gain": 3.0, "per_class": True}
    loaded, straight = assert_resume_equals_never_stopping(
        tmp_path, _tiny, lambda model: keras_msam.DecisionWeighting(model, **kwargs)
    )
    for key, value in kwargs.items():
        assert getattr(loaded, key) == value
    np.testing.assert_allclose(loaded.gains, straight.gains, rtol=1e-5, atol=1e-6)
    assert not np.allclose(loaded.gains, 1.0)
    np.testing.assert_allclose(  # the gains act in the loaded trainer's predictions too
        loaded.predict(x, verbose=0), straight.predict(x, verbose=0), rtol=1e-5, atol=1e-6
    )
