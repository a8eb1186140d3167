"""BTW: the KL, min–max, MI and smoothing equations against numpy/scikit-learn, the feature
scaling of a step against a step computed by hand, the epoch-end updates from validation data,
training on the embedded data, bad arguments and saving. Runs on the backend of KERAS_BACKEND."""

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
from keras_msam.trainers.btw import (
    adapt_smoothing,
    btw_weights,
    categorical_kl,
    gaussian_kl,
    instance_divergence,
    minmax_normalise,
)
from zoo.models.base import MultimodalClassifier
from zoo.models.fusions import ConcatFusion, GatedFusion

sklearn_metrics = pytest.importorskip("sklearn.metrics")
sklearn_features = pytest.importorskip("sklearn.feature_selection")


def _np(t):
    return np.asarray(keras.ops.convert_to_numpy(t), dtype=np.float64)


def _tiny_zoo_model(num_classes=4, fusion=None):
    """A tiny zoo model (Dense(5, tanh) encoders); linear concat fusion unless ``fusion``."""
    encoders = {}
    for name, dim in (("audio", 6), ("visual", 4)):
        inputs = keras.Input((dim,), name=name)
        encoders[name] = keras.Model(
            inputs, keras.layers.Dense(5, activation="tanh", name=f"{name}_dense")(inputs)
        )
    fusion = fusion or ConcatFusion(num_classes, name="fusion")
    return MultimodalClassifier(encoders, fusion, name="tiny")


def _softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _numpy_weights(kl, mi, running, s, normalize=True):
    kl = np.maximum(kl, 1e-5)
    low, high = kl.min(-1, keepdims=True), kl.max(-1, keepdims=True)
    norm = np.where(high > low, (kl - low) / np.where(high > low, high - low, 1), 1e-4)
    raw = s * norm * np.asarray(mi)[:, None] + (1 - s) * np.asarray(running)[:, None]
    return raw, (raw / raw.mean(0, keepdims=True) if normalize else raw)


# ------------------------------------------------------------------------------ equations


def test_kl_minmax_and_mi_combination_on_a_hand_computed_case():
    unimodal = np.array(
        [[[2.0, 0.0], [0.0, 0.0], [1.0, 3.0]], [[0.0, 1.0], [4.0, 0.0], [0.0, 0.0]]], "float32"
    )
    multimodal = np.array([[1.0, 0.0], [0.0, 2.0], [0.0, 0.0]], "float32")
    p_m, p = _softmax(unimodal.astype(np.float64)), _softmax(multimodal.astype(np.float64))
    kl = (p_m * (np.log(p_m) - np.log(p)[None])).sum(-1)
    np.testing.assert_allclose(_np(categorical_kl(unimodal, multimodal)), kl, atol=1e-6)
    # the same from probabilities
    np.testing.assert_allclose(_np(categorical_kl(p_m, p, from_logits=False)), kl, atol=1e-5)
    # Example 3 of the visual modality agrees exactly: KL 0, clamped to 1e-5
    clamped = _np(instance_divergence(unimodal, multimodal))
    assert clamped[1, 2] == pytest.approx(1e-5, rel=1e-3)
    kl = np.maximum(kl, 1e-5)
    normalised = _np(minmax_normalise(kl))
    want = (kl - kl.min(1, keepdims=True)) / (kl.max(1, keepdims=True) - kl.min(1, keepdims=True))
    np.testing.assert_allclose(normalised, want, atol=1e-6)
    np.testing.assert_allclose(normalised.min(1), 0.0, atol=1e-7)
    np.testing.assert_allclose(normalised.max(1), 1.0, atol=1e-6)
    np.testing.assert_allclose(_np(minmax_normalise(kl, invert=True)), 1.0 - want, atol=1e-6)
    # max = min: the reference's constant 1e-4
    np.testing.assert_allclose(_np(minmax_normalise(np.full((2, 3), 0.7))), 1e-4, rtol=1e-6)
    mi, running, s = np.array([0.5, 2.0]), np.array([1.0, 0.8]), 0.3
    raw, applied = (_np(t) for t in btw_weights(want, mi, running, s, normalize=True))
    raw_want = s * want * mi[:, None] + (1 - s) * running[:, None]
    np.testing.assert_allclose(raw, raw_want, rtol=1e-5)
    np.testing.assert_allclose(applied, raw_want / raw_want.mean(0), rtol=1e-5)
    np.testing.assert_allclose(applied.mean(0), 1.0, rtol=1e-6)  # each example: mean 1
    kept = _np(btw_weights(want, mi, running, s, normalize=False)[1])
    np.testing.assert_allclose(kept, raw_want, rtol=1e-5)


def test_binary_outputs_use_the_bernoulli_kl():
    unimodal = np.array([[[0.5], [-1.0]]], "float32")
    multimodal = np.array([[2.0], [0.0]], "float32")
    a, b = 1 / (1 + np.exp(-unimodal[0, :, 0])), 1 / (1 + np.exp(-multimodal[:, 0]))
    want = a * np.log(a / b) + (1 - a) * np.log((1 - a) / (1 - b))
    np.testing.assert_allclose(_np(categorical_kl(unimodal, multimodal))[0], want, rtol=1e-5)


def test_gaussian_regression_kl_matches_numpy():
    rng = np.random.default_rng(0)
    unimodal = rng.standard_normal((3, 7, 1)).astype("float32")
    multimodal = rng.standard_normal((7, 1)).astype("float32")
    for sigma_p, sigma_q in ((0.1, 1.0), (0.4, 0.7)):
        diff = unimodal[..., 0].astype(np.float64) - multimodal[:, 0]
        want = np.log(sigma_q / sigma_p) + (sigma_p**2 + diff**2) / (2 * sigma_q**2) - 0.5
        got = _np(gaussian_kl(unimodal, multimodal, sigma_p, sigma_q))
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
        routed = _np(
            instance_divergence(unimodal, multimodal, "regression", True, sigma_p, sigma_q)
        )
        np.testing.assert_allclose(routed, np.maximum(want, 1e-5), rtol=1e-5, atol=1e-6)
    # equal predictions and σp = σq: KL = 0, clamped to 1e-5
    same = _np(instance_divergence(unimodal, unimodal[0], "regression", True, 0.5, 0.5))
    np.testing.assert_allclose(same[0], 1e-5, rtol=1e-4)


def test_smoothing_rule():
    assert adapt_smoothing(0.5, 1.2, 1.0) == pytest.approx(0.55)  # worse than best: s up
    assert adapt_smoothing(0.5, 0.8, 1.0) == pytest.approx(0.45)  # better: s down
    assert adapt_smoothing(0.5, 1.0, 1.0) == pytest.approx(0.45)  # not worse: s down
    assert adapt_smoothing(0.98, 2.0, 1.0) == 1.0 and adapt_smoothing(0.03, 0.0, 1.0) == 0.0
    assert adapt_smoothing(0.5, 2.0, 1.0, step=0.2) == pytest.approx(0.7)


# ------------------------------------------------------------------------------ the step


def _manual_step(model, x, y, lr, s=0.5, mi=(1.0, 1.0), running=(1.0, 1.0)):
    """The BTW step of the tiny linear zoo model in numpy: (applied weights, loss, new vars)."""
    layers = {name: model.encoders[name].get_layer(f"{name}_dense") for name in ("audio", "visual")}
    w = {n: (_np(layer.kernel), _np(layer.bias)) for n, layer in layers.items()}
    kernel, bias = _np(model.fusion.head.kernel), _np(model.fusion.head.bias)
    xs = {n: x[n].astype(np.float64) for n in ("audio", "visual")}
    f = {n: np.tanh(xs[n] @ w[n][0] + w[n][1]) for n in xs}
    rows = {"audio": slice(0, 5), "visual": slice(5, 10)}
    split = np.stack([f[n] @ kernel[rows[n]] + bias / 2 for n in ("audio", "visual")])
    plain = np.concatenate([f["audio"], f["visual"]], 1) @ kernel + bias
    p_m, p = _softmax(split), _softmax(plain)
    kl = (p_m * (np.log(p_m) - np.log(p)[None])).sum(-1)
    _, applied = _numpy_weights(kl, mi, running, s)
    scaled = np.concatenate(
        [applied[0][:, None] * f["audio"], applied[1][:, None] * f["visual"]], 1
    )
    prob = _softmax(scaled @ kernel + bias)
    batch = len(y)
    loss = -np.log(prob[np.arange(batch), y]).mean()
    delta = prob.copy()
    delta[np.arange(batch), y] -= 1
    delta /= batch
    new = {"head": (kernel - lr * scaled.T @ delta, bias - lr * delta.sum(0))}
    for index, n in enumerate(("audio", "visual")):
        d_pre = applied[index][:, None] * (delta @ kernel[rows[n]].T) * (1 - f[n] ** 2)
        new[n] = (w[n][0] - lr * xs[n].T @ d_pre, w[n][1] - lr * d_pre.sum(0))
    return applied, loss, new


def test_a_step_scales_each_modality_features_by_its_weight():
    x, y = small_batch(batch=12)
    lr = 0.1
    trainer = compile_trainer(keras_msam.BTW(_tiny_zoo_model(), log_shapley=False), lr=lr)
    model = trainer.model
    applied, loss, new = _manual_step(model, x, y, lr)
    assert np.ptp(applied) > 0.05  # the weights are far from 1: the check has teeth
    logs = trainer.train_on_batch(x, y, return_dict=True)
    np.testing.assert_allclose(logs["loss"], loss, rtol=1e-5)
    np.testing.assert_allclose(
        [logs["btw_weight_audio"], logs["btw_weight_visual"]], applied.mean(1), rtol=1e-5
    )
    assert logs["btw_mi_audio"] == 1.0 and logs["btw_mi_visual"] == 1.0
    for name in ("audio", "visual"):
        layer = model.encoders[name].get_layer(f"{name}_dense")
        np.testing.assert_allclose(_np(layer.kernel), new[name][0], rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(_np(layer.bias), new[name][1], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(_np(model.fusion.head.kernel), new["head"][0], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(_np(model.fusion.head.bias), new["head"][1], rtol=1e-4, atol=1e-6)
    # the step accumulates the raw batch-mean weights for the modality-level EMA
    assert float(_np(trainer._weight_steps)) == 1.0


@pytest.mark.parametrize("unimodal", ["split", "zero_padded"])
def test_weights_of_one_give_exactly_the_joint_step(unimodal):
    x, y = small_batch()
    first, second = _tiny_zoo_model(), _tiny_zoo_model()
    copy_state(first, second)
    # s = 0: w = w̄ = 1 for every example and modality
    btw = compile_trainer(
        keras_msam.BTW(first, smoothing=0.0, unimodal=unimodal, log_shapley=False)
    )
    joint = compile_trainer(keras_msam.Joint(second, log_shapley=False))
    for _ in range(2):
        logs = btw.train_on_batch(x, y, return_dict=True)
        joint_logs = joint.train_on_batch(x, y, return_dict=True)
        assert logs["btw_weight_audio"] == pytest.approx(1.0)
        np.testing.assert_allclose(logs["loss"], joint_logs["loss"], rtol=1e-6)
    for a, b in zip(weights_of(btw), weights_of(joint)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_zero_padded_weights_come_from_single_modality_outputs():
    x, y = small_batch(batch=10)
    model = _tiny_zoo_model(fusion=GatedFusion(4, name="fusion"))
    trainer = compile_trainer(keras_msam.BTW(model, normalize=False, log_shapley=False))
    assert trainer._source == "zero_padded"
    zero = {n: np.zeros_like(v) for n, v in x.items()}
    outputs = [
        _np(model({"audio": x["audio"], "visual": zero["visual"]})),
        _np(model({"audio": zero["audio"], "visual": x["visual"]})),
    ]
    plain = _np(model(x))
    p_m, p = _softmax(np.stack(outputs)), _softmax(plain)
    kl = (p_m * (np.log(p_m) - np.log(p)[None])).sum(-1)
    raw, _ = _numpy_weights(kl, (1.0, 1.0), (1.0, 1.0), 0.5, normalize=False)
    logs = trainer.train_on_batch(x, y, return_dict=True)
    np.testing.assert_allclose(
        [logs["btw_weight_audio"], logs["btw_weight_visual"]], raw.mean(1), rtol=1e-4
    )
    np.testing.assert_allclose(_np(trainer._weight_sum), raw.mean(1), rtol=1e-4)


# ------------------------------------------------------------------- epoch-end updates


def test_mi_is_updated_from_the_validation_data_every_update_every_epochs():
    x, y = small_batch(batch=32)
    xv, yv = small_batch(batch=40, seed=3)
    trainer = compile_trainer(
        keras_msam.BTW(_tiny_zoo_model(), update_every=2, normalize=False, log_shapley=False)
    )
    history = trainer.fit(
        x, y, batch_size=16, epochs=2, validation_data=(xv, yv), shuffle=False, verbose=0
    )
    assert history.history["btw_mi_audio"] == [1.0, 1.0]  # no update before the end of epoch 2
    model = trainer.model
    features = {n: _np(v) for n, v in model.encode(xv).items()}
    kernel, bias = _np(model.fusion.head.kernel), _np(model.fusion.head.bias)
    plain = np.argmax(_np(model.fuse(model.encode(xv))), -1)
    want = []
    for name, rows in (("audio", slice(0, 5)), ("visual", slice(5, 10))):
        split = np.argmax(features[name] @ kernel[rows] + bias / 2, -1)
        want.append(max(sklearn_metrics.mutual_info_score(plain, split), 1e-5))
    np.testing.assert_allclose(_np(trainer._mi), want, rtol=1e-5)
    assert not np.allclose(want, 1.0)
    # w̄ = mean of the raw weights of the 4 steps (normalize=False: the logged weights)
    np.testing.assert_allclose(
        _np(trainer._running_weight),
        [
            np.mean(history.history["btw_weight_audio"]),
            np.mean(history.history["btw_weight_visual"]),
        ],
        rtol=1e-5,
    )
    assert float(_np(trainer._weight_steps)) == 0.0  # the accumulators restart
    # the next epoch logs the new MI
    more = trainer.fit(x, y, batch_size=16, epochs=1, validation_data=(xv, yv), verbose=0)
    np.testing.assert_allclose(more.history["btw_mi_audio"][0], want[0], rtol=1e-5)


class _Batches(keras.utils.PyDataset):
    def __init__(self, x, y, batch_size):
        super().__init__()
        self.x, self.y, self.batch_size = x, y, batch_size

    def __len__(self):
        return -(-len(self.y) // self.batch_size)

    def __getitem__(self, index):
        rows = slice(index * self.batch_size, (index + 1) * self.batch_size)
        return {k: v[rows] for k, v in self.x.items()}, self.y[rows]


def test_validation_predictions_of_a_dataset_equal_those_of_arrays():
    xv, yv = small_batch(batch=20, seed=5)
    trainer = keras_msam.BTW(_tiny_zoo_model(), log_shapley=False)
    u_arrays, m_arrays = trainer.validation_predictions((xv, yv), batch_size=8)
    u_data, m_data = trainer.validation_predictions(_Batches(xv, yv, 6))
    assert u_arrays.shape == (2, 20, 4) and m_arrays.shape == (20, 4)
    np.testing.assert_allclose(u_data, u_arrays, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(m_data, m_arrays, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(m_arrays, _np(trainer.model(xv)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(u_arrays.sum(0), m_arrays, rtol=1e-5, atol=1e-5)  # the split


def test_regression_mi_matches_mutual_info_regression():
    rng = np.random.default_rng(0)
    x, _ = small_batch(batch=48)
    y = rng.standard_normal((48, 1)).astype("float32")
    model = _tiny_zoo_model(num_classes=1)
    trainer = keras_msam.BTW(model, task="regression", update_every=1, seed=7, log_shapley=False)
    trainer.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    xt, xv = ({k: v[:32] for k, v in x.items()}, {k: v[32:] for k, v in x.items()})
    trainer.fit(xt, y[:32], batch_size=16, epochs=1, validation_data=(xv, y[32:]), verbose=0)
    features = {n: _np(v) for n, v in model.encode(xv).items()}
    kernel, bias = _np(model.fusion.head.kernel), _np(model.fusion.head.bias)
    plain = _np(model.fuse(model.encode(xv)))[:, 0]
    want = []
    for name, rows in (("audio", slice(0, 5)), ("visual", slice(5, 10))):
        split = features[name] @ kernel[rows] + bias / 2
        mi = sklearn_features.mutual_info_regression(split, plain, random_state=7)[0]
        want.append(max(mi, 1e-5))
    np.testing.assert_allclose(_np(trainer._mi), want, rtol=1e-4, atol=1e-6)


def test_smoothing_adapts_on_the_validation_loss_with_the_reference_lag():
    trainer = keras_msam.BTW(_tiny_zoo_model(), update_every=2, log_shapley=False)
    callback = trainer.update_callback()  # no validation data: MI stays, s still from val_loss

    def state():
        return float(_np(trainer._smoothing)), float(_np(trainer._next_smoothing))

    trainer._weight_sum.assign(np.array([3.0, 1.5], "float32"))
    trainer._weight_steps.assign(3.0)
    callback.on_epoch_end(0, {"val_loss": 1.0})  # not an update epoch: best = 1.0
    assert state() == (0.5, 0.5) and float(_np(trainer._best_loss)) == 1.0
    with pytest.warns(UserWarning, match="validation data"):
        callback.on_epoch_end(1, {"val_loss": 1.2})  # worse than best: s ↑ for the next period
    assert state() == pytest.approx((0.5, 0.55))
    np.testing.assert_allclose(_np(trainer._running_weight), [1.0, 0.5])  # w̄ = sum / steps
    np.testing.assert_allclose(_np(trainer._weight_sum), [0.0, 0.0])
    np.testing.assert_allclose(_np(trainer._mi), [1.0, 1.0])
    callback.on_epoch_end(2, {"val_loss": 0.9})
    callback.on_epoch_end(3, {"val_loss": 0.8})  # better than 0.9: s ↓; the period uses 0.55
    assert state() == pytest.approx((0.55, 0.5))
    assert float(_np(trainer._best_loss)) == pytest.approx(0.8)
    np.testing.assert_allclose(_np(trainer._running_weight), [1.0, 0.5])  # no steps: kept
    callback.on_epoch_end(5, {})  # no val_loss: s is not adapted
    assert state() == pytest.approx((0.5, 0.5))


def test_the_applied_smoothing_enters_the_step():
    x, y = small_batch(batch=12)
    trainer = compile_trainer(keras_msam.BTW(_tiny_zoo_model(), log_shapley=False), lr=0.1)
    trainer._smoothing.assign(0.8)
    trainer._mi.assign(np.array([0.3, 2.0], "float32"))
    trainer._running_weight.assign(np.array([1.2, 0.6], "float32"))
    applied, loss, _ = _manual_step(
        trainer.model, x, y, 0.1, s=0.8, mi=(0.3, 2.0), running=(1.2, 0.6)
    )
    logs = trainer.train_on_batch(x, y, return_dict=True)
    np.testing.assert_allclose(logs["loss"], loss, rtol=1e-5)
    np.testing.assert_allclose(
        [logs["btw_weight_audio"], logs["btw_weight_visual"]], applied.mean(1), rtol=1e-5
    )
    np.testing.assert_allclose([logs["btw_mi_audio"], logs["btw_mi_visual"]], [0.3, 2.0])


# ------------------------------------------------------------ training, errors and saving


def test_trains_the_embedded_default_with_finite_loss():
    data = zoo.datasets.imbalanced_av.generate(num_train=256, num_validation=32, num_test=8, seed=0)
    model = zoo.models.create("late_fusion_av_cnn", num_classes=10, width=8)
    trainer = compile_trainer(
        keras_msam.BTW(model, update_every=1, log_shapley=False), lr=0.05, momentum=0.9
    )
    validation = data["validation"]
    history = trainer.fit(
        *data["train"],
        batch_size=32,
        epochs=1,
        steps_per_epoch=4,
        validation_data=validation,
        verbose=0,
    )
    assert np.all(np.isfinite(history.history["loss"]))
    assert np.all(np.isfinite(history.history["val_loss"]))
    assert all(np.all(np.isfinite(w)) for w in weights_of(trainer))
    for name in ("audio", "visual"):
        assert np.all(np.isfinite(history.history[f"btw_weight_{name}"]))
    assert history.history["btw_mi_audio"][0] == 1.0
    assert np.all(_np(trainer._mi) >= 0.99e-5) and not np.allclose(_np(trainer._mi), 1.0)
    results = trainer.evaluate(*validation, verbose=0, return_dict=True)
    assert np.isfinite(results["loss"])
    assert not any(key.startswith("btw_") for key in results)


def test_a_model_without_encode_and_fuse_is_refused():
    with pytest.raises(ValueError, match=r"small_av.*encode|encode.*small_av"):
        keras_msam.BTW(small_av_model())


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"task": "ranking"}, "task"),
        ({"update_every": 0}, "update_every"),
        ({"update_every": 1.5}, "update_every"),
        ({"update_every": True}, "update_every"),
        ({"smoothing": 1.5}, "smoothing"),
        ({"smoothing": -0.1}, "smoothing"),
        ({"smoothing_step": float("nan")}, "smoothing_step"),
        ({"invert": "yes"}, "invert"),
        ({"normalize": None}, "normalize"),
        ({"sigma_p": 0}, "sigma_p"),
        ({"sigma_q": -1.0}, "sigma_q"),
        ({"unimodal": "bogus"}, "unimodal"),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        keras_msam.BTW(_tiny_zoo_model(), **kwargs)


def test_split_needs_linear_fusion_and_regression_one_output():
    with pytest.raises(ValueError, match="linear late fusion"):
        keras_msam.BTW(_tiny_zoo_model(fusion=GatedFusion(4, name="fusion")), unimodal="split")
    trainer = keras_msam.BTW(_tiny_zoo_model(num_classes=3), task="regression")
    trainer.compile(optimizer="sgd", loss="mse")
    x, _ = small_batch()
    with pytest.raises(ValueError, match="one output"):
        trainer.train_on_batch(x, np.zeros((16, 3), "float32"))
    inputs = keras.Input((4,), name="audio")
    single = keras.Model({"audio": inputs}, keras.layers.Dense(2)(inputs))
    with pytest.raises(ValueError, match="two or more"):
        keras_msam.BTW(single)


def test_save_load_and_continue_equals_never_stopping(tmp_path):
    kwargs = {"update_every": 3, "invert": True, "smoothing": 0.7, "log_shapley": False}

    def prepare(trainer):
        trainer._mi.assign(np.array([0.4, 0.9], "float32"))
        trainer._running_weight.assign(np.array([1.1, 0.7], "float32"))

    loaded, _ = assert_resume_equals_never_stopping(
        tmp_path, _tiny_zoo_model, lambda model: keras_msam.BTW(model, **kwargs), prepare=prepare
    )
    assert loaded.update_every == 3 and loaded.invert is True and loaded.smoothing == 0.7
