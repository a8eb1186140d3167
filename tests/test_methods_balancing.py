"""ASAM, OGM-GE, AGM and MWAM: each defining equation against numpy, steps against the plain step,
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
    tiny_zoo_model,
    weights_of,
)

import keras_msam
import zoo
from keras_msam.trainers.agm import agm_coefficients, agm_scores, shapley_logits
from keras_msam.trainers.ogmge import ogm_coefficients


def _np(t):
    return np.asarray(keras.ops.convert_to_numpy(t), dtype=np.float64)


_zoo_linear_model = tiny_zoo_model


def _twins(cls, kwargs, model_fn=small_av_model, lr=0.1):
    """A method trainer and a Joint trainer on models with identical weights."""
    first, second = model_fn(), model_fn()
    copy_state(first, second)
    return (
        compile_trainer(cls(first, **kwargs), lr=lr),
        compile_trainer(keras_msam.Joint(second, log_shapley=False), lr=lr),
    )


# ------------------------------------------------------------------------------------ ASAM


def test_asam_matches_a_step_computed_by_hand_in_numpy():
    audio = keras.Input((3,), name="audio")
    visual = keras.Input((2,), name="visual")
    joined = keras.layers.Concatenate()([audio, visual])
    model = keras.Model(
        {"audio": audio, "visual": visual}, keras.layers.Dense(1, name="head")(joined)
    )
    rng = np.random.default_rng(0)
    w = rng.standard_normal((5, 1)).astype("float32")
    b = np.array([0.3], "float32")
    model.set_weights([w, b])
    x = {
        "audio": rng.standard_normal((8, 3)).astype("float32"),
        "visual": rng.standard_normal((8, 2)).astype("float32"),
    }
    y = rng.standard_normal((8, 1)).astype("float32")
    rho, lr = 0.5, 0.05
    trainer = keras_msam.SAM(model, rho=rho, adaptive=True, log_shapley=False)
    trainer.compile(optimizer=keras.optimizers.SGD(lr), loss="mse")
    trainer.train_on_batch(x, y)

    features = np.concatenate([x["audio"], x["visual"]], axis=1).astype(np.float64)

    def grad(w_, b_):
        residual = features @ w_ + b_ - y
        return 2 * features.T @ residual / len(y), 2 * residual.mean(axis=0)

    gw, gb = grad(w, b)
    norm = np.sqrt(((np.abs(w) * gw) ** 2).sum() + ((np.abs(b) * gb) ** 2).sum())
    ew, eb = rho * w**2 * gw / norm, rho * b**2 * gb / norm  # ρ |θ|² g / ‖|θ| g‖
    gw1, gb1 = grad(w + ew, b + eb)
    got_w, got_b = weights_of(trainer)
    np.testing.assert_allclose(got_w, w - lr * gw1, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got_b, b - lr * gb1, rtol=1e-5, atol=1e-6)


def test_asam_rejects_a_non_boolean_adaptive():
    with pytest.raises(ValueError, match="adaptive"):
        keras_msam.SAM(small_av_model(), adaptive="yes")


# ---------------------------------------------------------------------------------- OGM-GE


def test_ogm_coefficients_match_the_official_formula():
    alpha = 0.3
    scores = np.array([6.0, 2.0])  # audio dominates: ρ_a = s_a/s_v = 3
    got = _np(ogm_coefficients(scores, alpha))
    np.testing.assert_allclose(got, [1 - np.tanh(alpha * 3.0), 1.0], rtol=1e-6)
    three = _np(ogm_coefficients(np.array([1.0, 4.0, 2.0]), alpha))  # ratio to the weakest
    np.testing.assert_allclose(
        three, [1.0, 1 - np.tanh(alpha * 4), 1 - np.tanh(alpha * 2)], rtol=1e-6
    )


def test_ogm_scales_the_dominant_encoder_gradient_by_its_coefficient():
    x, y = small_batch(num_classes=4)
    alpha = 0.5
    ogm, joint = _twins(
        keras_msam.OGMGE, {"alpha": alpha, "ge": False, "log_shapley": False}, _zoo_linear_model
    )
    start = weights_of(ogm)
    # the coefficient by hand: split logits o_m = W_m φ_m + b/2, scores Σ softmax(o_m)_y
    model = ogm.model
    features = {k: _np(v) for k, v in model.encode(x).items()}
    kernel, bias = _np(model.fusion.head.kernel), _np(model.fusion.head.bias)
    scores = []
    for name, rows in (("audio", slice(0, 5)), ("visual", slice(5, 10))):
        logits = features[name] @ kernel[rows] + bias / 2
        prob = np.exp(logits - logits.max(1, keepdims=True))
        prob /= prob.sum(1, keepdims=True)
        scores.append(prob[np.arange(len(y)), y].sum())
    ratio = np.array(scores) / min(scores)
    coeff = np.where(ratio > 1, 1 - np.tanh(alpha * ratio), 1.0)
    logs = ogm.train_on_batch(x, y, return_dict=True)
    joint.train_on_batch(x, y)
    # The reference reads the features from an eager forward; TensorFlow's compiled step runs
    # other oneDNN kernels (~1e-5 relative apart), which the score ratio and tanh amplify to a few
    # 1e-5 in the coefficient. A wrong formula is off by orders of magnitude more.
    np.testing.assert_allclose(
        [logs["ogm_coeff_audio"], logs["ogm_coeff_visual"]], coeff, rtol=2e-4
    )
    used = [logs["ogm_coeff_audio"], logs["ogm_coeff_visual"]]  # checked against numpy above
    groups = [ogm.structure.group_index(v) for v in ogm.trainable_variables]
    for w0, a, b, group in zip(start, weights_of(ogm), weights_of(joint), groups):
        factor = 1.0 if group < 0 else used[group]
        np.testing.assert_allclose(a - w0, factor * (b - w0), rtol=1e-4, atol=1e-6)


def test_ogm_with_alpha_zero_and_no_noise_is_the_plain_step():
    x, y = small_batch()
    ogm, joint = _twins(keras_msam.OGMGE, {"alpha": 0.0, "ge": False})
    for _ in range(2):
        ogm.train_on_batch(x, y)
        joint.train_on_batch(x, y)
    for a, b in zip(weights_of(ogm), weights_of(joint)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_ogm_ge_noise_changes_only_encoders_and_only_in_the_window():
    x, y = small_batch()
    ogm, joint = _twins(keras_msam.OGMGE, {"alpha": 0.0, "ge": True})
    start = weights_of(ogm)
    ogm.train_on_batch(x, y)
    joint.train_on_batch(x, y)
    groups = [ogm.structure.group_index(v) for v in ogm.trainable_variables]
    moved = [not np.allclose(a, b) for a, b in zip(weights_of(ogm), weights_of(joint))]
    assert [m for m, g in zip(moved, groups) if g < 0] == [False] * groups.count(-1)
    assert any(m for m, g in zip(moved, groups) if g >= 0)
    # outside the modulation window: the plain step, no noise
    late, plain = _twins(keras_msam.OGMGE, {"alpha": 1.0, "modulation_epochs": (3, 5)})
    late.train_on_batch(x, y)
    plain.train_on_batch(x, y)
    for a, b in zip(weights_of(late), weights_of(plain)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert len(start) == len(groups)


def test_fit_sets_the_epoch_counter_used_by_the_window():
    x, y = small_batch(batch=32)
    trainer = compile_trainer(keras_msam.OGMGE(small_av_model(), modulation_epochs=(1, 1)))
    history = trainer.fit(x, y, batch_size=16, epochs=3, verbose=0)
    assert float(keras.ops.convert_to_numpy(trainer._epoch)) == 2.0
    coeffs = np.minimum(history.history["ogm_coeff_audio"], history.history["ogm_coeff_visual"])
    assert coeffs[0] == 1.0 and coeffs[2] == 1.0  # outside the window: no modulation
    assert coeffs[1] < 1.0


# ------------------------------------------------------------------------------------- AGM


def test_agm_shapley_logits_sum_to_the_full_logits_and_match_the_official_form():
    rng = np.random.default_rng(0)
    full, pad_visual, pad_audio = (rng.standard_normal((5, 3)) for _ in range(3))
    plan = keras_msam.trainers.agm.coalition_plan(2, "zero")
    # plan order: {audio}, {visual}, {audio, visual}
    outputs = np.stack([pad_visual, pad_audio, full]).astype("float32")
    phi = _np(shapley_logits(outputs, plan.weights))
    np.testing.assert_allclose(phi[0], 0.5 * (full - pad_audio + pad_visual), atol=1e-6)
    np.testing.assert_allclose(phi[1], 0.5 * (full - pad_visual + pad_audio), atol=1e-6)
    np.testing.assert_allclose(phi.sum(0), full, atol=1e-6)
    plan3 = keras_msam.trainers.agm.coalition_plan(3, "zero")
    outputs3 = rng.standard_normal((plan3.num_coalitions, 4, 2)).astype("float32")
    np.testing.assert_allclose(
        _np(shapley_logits(outputs3, plan3.weights)).sum(0), outputs3[-1], atol=1e-5
    )


def test_agm_scores_and_coefficients_match_numpy():
    phi = np.array([[[2.0, 0.0], [0.0, 1.0]], [[0.5, 0.0], [40.0, -40.0]]], "float32")
    y = np.array([0, 1])
    prob = np.exp(phi) / np.exp(phi).sum(-1, keepdims=True)
    expected = -np.log(np.maximum(prob[:, np.arange(2), y], 1e-8)).mean(-1)
    scores = _np(agm_scores(phi, y))
    np.testing.assert_allclose(scores, expected, rtol=1e-5)
    running = np.array([0.7, 1.9])
    alpha = 2.5
    r = np.array([np.exp(scores[1] - scores[0]), np.exp(scores[0] - scores[1])])
    r_bar = np.array([np.exp(running[1] - running[0]), np.exp(running[0] - running[1])])
    want = np.exp(alpha * np.minimum(r_bar - r, 10))
    np.testing.assert_allclose(_np(agm_coefficients(scores, running, alpha)), want, rtol=1e-5)


def test_agm_with_alpha_zero_is_the_plain_step_and_running_scores_are_means():
    x, y = small_batch()
    agm, joint = _twins(keras_msam.AGM, {"alpha": 0.0, "clip_norm": None})
    seen = []
    for _ in range(3):
        logs = agm.train_on_batch(x, y, return_dict=True)
        seen.append([logs["agm_score_audio"], logs["agm_score_visual"]])
        joint.train_on_batch(x, y)
    for a, b in zip(weights_of(agm), weights_of(joint)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    running = _np(agm._running_scores)
    np.testing.assert_allclose(running, np.mean(seen, axis=0), rtol=1e-5)
    assert float(keras.ops.convert_to_numpy(agm._steps)) == 3.0


def test_agm_coefficients_weight_each_modality_path():
    # One step from fresh running scores (r̄ = 1): c_m follows from the batch's scores only.
    x, y = small_batch()
    agm = compile_trainer(keras_msam.AGM(small_av_model(), alpha=1.0, clip_norm=None))
    logs = agm.train_on_batch(x, y, return_dict=True)
    scores = np.array([logs["agm_score_audio"], logs["agm_score_visual"]])
    r = np.array([np.exp(scores[1] - scores[0]), np.exp(scores[0] - scores[1])])
    np.testing.assert_allclose(
        [logs["agm_coeff_audio"], logs["agm_coeff_visual"]], np.exp(1.0 - r), rtol=1e-4
    )


# ------------------------------------------------------------------------------- MWAM / FRM


def _frm_numpy(image, p=8, q=2, sigma=1e-6):
    from scipy.fft import dctn

    total = 0.0
    h, w = image.shape[1] // p * p, image.shape[2] // p * p
    for b in range(image.shape[0]):
        for c in range(image.shape[3]):
            for i in range(0, h, p):
                for j in range(0, w, p):
                    coeff = dctn(image[b, i : i + p, j : j + p, c], norm="ortho")
                    low = coeff[:q, :q]
                    high = coeff[p - q :, p - q :][::-1, ::-1]
                    total += np.abs(low / (high + sigma)).sum()
    return total


def test_frequency_ratio_of_known_images_matches_a_scipy_dct():
    rng = np.random.default_rng(0)
    image = rng.standard_normal((2, 19, 16, 3)).astype("float32")  # 19 → cropped to 16
    got = float(keras_msam.analysis.frequency_ratio(image))
    np.testing.assert_allclose(got, _frm_numpy(image), rtol=1e-3)
    # a constant block has only a DC coefficient: |DC / σ| per block and channel
    flat = np.ones((1, 8, 8, 1), "float32")
    np.testing.assert_allclose(
        float(keras_msam.analysis.frequency_ratio(flat, sigma=1.0)), 8.0, rtol=1e-4
    )
    mean = float(keras_msam.analysis.frequency_ratio(image, reduction="mean"))
    np.testing.assert_allclose(mean, _frm_numpy(image) / (2 * 2 * 2 * 3 * 4), rtol=1e-3)
    vectors = rng.standard_normal((3, 17)).astype("float32")  # 1-D extension
    basis = keras_msam.analysis.dct_matrix(8).astype(np.float64)
    blocks = vectors[:, :16].reshape(3, 2, 8) @ basis.T
    want = np.abs(blocks[..., :2] / (blocks[..., 6:][..., ::-1] + 1e-6)).sum()
    np.testing.assert_allclose(float(keras_msam.analysis.frequency_ratio(vectors)), want, rtol=1e-3)


def test_mwam_weights_follow_the_paper_function():
    frm = np.array([3.0, 1.0])
    relative = frm / frm.mean()
    want = 1.5 - 1.0 / (1 + np.exp(-6.0 * (relative - 0.7)))
    np.testing.assert_allclose(_np(keras_msam.analysis.frm_weights(frm)), want, rtol=1e-5)


def test_mwam_gradient_editing_scales_encoders_and_keeps_the_bank():
    x, y = small_batch()
    mwam, joint = _twins(keras_msam.MWAM, {"intervention": "gradient", "block_size": 4, "keep": 1})
    start = weights_of(mwam)
    frms = [
        float(keras_msam.analysis.frequency_ratio(x[n], 4, 1, reduction="mean"))
        for n in ("audio", "visual")
    ]
    logs = mwam.train_on_batch(x, y, return_dict=True)
    joint.train_on_batch(x, y)
    weights = _np(keras_msam.analysis.frm_weights(np.array(frms)))
    np.testing.assert_allclose(
        [logs["mwam_weight_audio"], logs["mwam_weight_visual"]], weights, rtol=1e-5
    )
    groups = [mwam.structure.group_index(v) for v in mwam.trainable_variables]
    for w0, a, b, group in zip(start, weights_of(mwam), weights_of(joint), groups):
        factor = 1.0 if group < 0 else weights[group]
        np.testing.assert_allclose(a - w0, factor * (b - w0), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(_np(mwam._bank), frms, rtol=1e-5)  # first step: F̂ = F
    x2, y2 = small_batch(seed=1)
    mwam.train_on_batch(x2, y2)
    frms2 = [
        float(keras_msam.analysis.frequency_ratio(x2[n], 4, 1, reduction="mean"))
        for n in ("audio", "visual")
    ]
    np.testing.assert_allclose(
        _np(mwam._bank), 0.5 * np.array(frms) + 0.5 * np.array(frms2), rtol=1e-5
    )


def test_mwam_loss_intervention_adds_the_weighted_auxiliary_losses():
    x, y = small_batch()
    mwam, joint = _twins(keras_msam.MWAM, {"intervention": "loss", "block_size": 4, "keep": 1})
    mwam.train_on_batch(x, y)
    joint.train_on_batch(x, y)
    assert any(not np.allclose(a, b) for a, b in zip(weights_of(mwam), weights_of(joint)))


# ----------------------------------------------------------- training, errors and saving

METHODS = [
    (keras_msam.OGMGE, {}),
    (keras_msam.AGM, {}),
    (keras_msam.MWAM, {}),
    (keras_msam.SAM, {"adaptive": True, "rho": 0.5}),
]


@pytest.mark.parametrize("cls, kwargs", METHODS, ids=lambda v: getattr(v, "__name__", ""))
def test_trains_the_embedded_default_with_finite_loss(cls, kwargs):
    data = zoo.datasets.imbalanced_av.generate(num_train=64, num_validation=32, num_test=8)
    model = zoo.models.create("late_fusion_av_cnn", num_classes=10, width=8)
    trainer = compile_trainer(cls(model, **kwargs), lr=0.05, momentum=0.9)
    history = trainer.fit(*data["train"], batch_size=32, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    assert all(np.all(np.isfinite(w)) for w in weights_of(trainer))
    results = trainer.evaluate(*data["validation"], verbose=0, return_dict=True)
    assert np.isfinite(results["loss"])
    assert not any(key.startswith(("ogm_", "agm_", "mwam_")) for key in results)


@pytest.mark.parametrize(
    "cls, kwargs, match",
    [
        (keras_msam.OGMGE, {"alpha": -1}, "alpha"),
        (keras_msam.OGMGE, {"modulation_epochs": (5, 2)}, "modulation_epochs"),
        (keras_msam.OGMGE, {"modulation_epochs": "all"}, "modulation_epochs"),
        (keras_msam.OGMGE, {"unimodal": "split"}, "linear late fusion"),
        (keras_msam.OGMGE, {"unimodal": "bogus"}, "unimodal"),
        (keras_msam.AGM, {"alpha": float("nan")}, "alpha"),
        (keras_msam.AGM, {"clip_norm": 0}, "clip_norm"),
        (keras_msam.MWAM, {"intervention": "both"}, "intervention"),
        (keras_msam.MWAM, {"keep": 5}, "keep"),
        (keras_msam.MWAM, {"momentum": 1.0}, "momentum"),
        (keras_msam.MWAM, {"alpha": 0.5, "beta": 1.0}, "alpha - beta"),
        (keras_msam.MWAM, {"frm_reduction": "max"}, "frm_reduction"),
    ],
)
def test_bad_arguments_raise_clear_errors(cls, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cls(small_av_model(), **kwargs)


def test_single_modality_models_are_refused():
    inputs = keras.Input((4,), name="audio")
    model = keras.Model({"audio": inputs}, keras.layers.Dense(2)(inputs))
    for cls in (keras_msam.OGMGE, keras_msam.AGM, keras_msam.MWAM):
        with pytest.raises(ValueError, match="two or more"):
            cls(model)


def test_frequency_ratio_rejects_bad_inputs():
    with pytest.raises(ValueError, match="smaller"):
        keras_msam.analysis.frequency_ratio(np.zeros((1, 4, 4, 1), "float32"))
    with pytest.raises(ValueError, match="keep"):
        keras_msam.analysis.frequency_ratio(np.zeros((1, 8, 8, 1), "float32"), keep=5)
    with pytest.raises(ValueError, match="takes"):
        keras_msam.analysis.frequency_ratio(np.zeros((2,), "float32"))


def test_agm_refuses_a_model_that_outputs_probabilities():
    trainer = keras_msam.AGM(small_av_model())
    trainer.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    x, y = small_batch()
    with pytest.raises(ValueError, match="logits"):
        trainer.train_on_batch(x, y)


@pytest.mark.parametrize(
    "cls, kwargs",
    [
        (keras_msam.OGMGE, {"alpha": 0.4, "ge": False}),
        (keras_msam.OGMGE, {"alpha": 0.4, "ge": True, "seed": 5}),  # the noise resumes too
        (keras_msam.AGM, {"alpha": 2.0}),
        (keras_msam.MWAM, {"block_size": 4, "keep": 1}),
        (keras_msam.SAM, {"adaptive": True, "rho": 0.5}),
    ],
    ids=lambda v: getattr(v, "__name__", ""),
)
def test_save_load_and_continue_equals_never_stopping(tmp_path, cls, kwargs):
    loaded, _ = assert_resume_equals_never_stopping(
        tmp_path, small_av_model, lambda model: cls(model, **kwargs)
    )
    for key, value in kwargs.items():
        assert getattr(loaded, key) == value
