"""Trainers: the SPEC §4 checks of M-SAM, SAM against numpy, BatchNorm, mixed precision, saving,
logs and bad input. Every test runs on the backend picked by KERAS_BACKEND."""

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


def _one_step(trainer, x, y):
    trainer.train_on_batch(x, y)
    return weights_of(trainer)


def _pair(cls_a, kwargs_a, cls_b, kwargs_b, lr=0.1, momentum=0.9, model_fn=small_av_model):
    """Two trainers wrapping models with identical initial weights."""
    first = model_fn()
    second = model_fn()
    copy_state(first, second)
    return (
        compile_trainer(cls_a(first, **kwargs_a), lr=lr, momentum=momentum),
        compile_trainer(cls_b(second, **kwargs_b), lr=lr, momentum=momentum),
    )


def test_rho_zero_is_exactly_the_base_optimizer_step():
    x, y = small_batch()
    msam, _ = _pair(keras_msam.MSAM, {"rho": 0.0}, keras_msam.Joint, {})
    plain = small_av_model()
    plain.set_weights(msam.model.get_weights())
    compile_trainer(plain, momentum=0.9)
    for _ in range(3):
        after_msam = _one_step(msam, x, y)
        plain.train_on_batch(x, y)
    for a, b in zip(after_msam, weights_of(plain)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


def test_dominant_share_one_is_exactly_sam():
    x, y = small_batch()
    msam, sam = _pair(
        keras_msam.MSAM, {"rho": 0.5, "fixed_dominant_share": 1.0}, keras_msam.SAM, {"rho": 0.5}
    )
    for _ in range(3):
        after_msam = _one_step(msam, x, y)
        after_sam = _one_step(sam, x, y)
    for a, b in zip(after_msam, after_sam):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


def test_msam_mixes_sam_and_plain_gradients_by_the_dominant_share():
    x, y = small_batch()
    lr = 0.1
    trainers = {}
    for key, share in (("msam", 0.3), ("sam", 1.0), ("plain", 0.0)):
        model = small_av_model()
        if trainers:
            model.set_weights(next(iter(trainers.values())).model.get_weights())
        trainers[key] = compile_trainer(
            keras_msam.MSAM(model, rho=0.5, fixed_dominant_share=share), lr=lr
        )
    start = weights_of(trainers["msam"])
    after = {key: _one_step(t, x, y) for key, t in trainers.items()}
    for w0, m, s, p in zip(start, after["msam"], after["sam"], after["plain"]):
        np.testing.assert_allclose(m - w0, 0.3 * (s - w0) + 0.7 * (p - w0), atol=1e-6)


def test_sam_matches_a_step_computed_by_hand_in_numpy():
    audio = keras.Input((3,), name="audio")
    visual = keras.Input((2,), name="visual")
    joined = keras.layers.Concatenate()([audio, visual])
    model = keras.Model(
        {"audio": audio, "visual": visual}, keras.layers.Dense(1, name="head")(joined)
    )
    rng = np.random.default_rng(0)
    w = rng.standard_normal((5, 1)).astype("float32")
    b = np.array([0.1], "float32")
    model.set_weights([w, b])
    x = {
        "audio": rng.standard_normal((8, 3)).astype("float32"),
        "visual": rng.standard_normal((8, 2)).astype("float32"),
    }
    y = rng.standard_normal((8, 1)).astype("float32")
    rho, lr = 0.3, 0.05
    trainer = keras_msam.SAM(model, rho=rho, log_shapley=False)
    trainer.compile(optimizer=keras.optimizers.SGD(lr), loss="mse")
    trainer.train_on_batch(x, y)

    features = np.concatenate([x["audio"], x["visual"]], axis=1).astype(np.float64)

    def grad(w_, b_):
        residual = features @ w_ + b_ - y
        return 2 * features.T @ residual / len(y), 2 * residual.mean(axis=0)

    gw, gb = grad(w, b)
    norm = np.sqrt((gw**2).sum() + (gb**2).sum())
    gw1, gb1 = grad(w + rho * gw / norm, b + rho * gb / norm)
    expected_w, expected_b = w - lr * gw1, b - lr * gb1
    got_w, got_b = weights_of(trainer)
    np.testing.assert_allclose(got_w, expected_w, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got_b, expected_b, rtol=1e-5, atol=1e-6)


def test_batchnorm_statistics_are_updated_once_per_step():
    x, y = small_batch()
    model_fn = lambda: small_av_model(batch_norm=True)  # noqa: E731
    msam, joint = _pair(keras_msam.MSAM, {"rho": 0.5}, keras_msam.Joint, {}, model_fn=model_fn)
    before = [keras.ops.convert_to_numpy(v) for v in msam.model.non_trainable_variables]
    msam.train_on_batch(x, y)
    joint.train_on_batch(x, y)
    after_msam = [keras.ops.convert_to_numpy(v) for v in msam.model.non_trainable_variables]
    after_joint = [keras.ops.convert_to_numpy(v) for v in joint.model.non_trainable_variables]
    assert any(not np.allclose(a, b) for a, b in zip(after_msam, before)), "BN never updated"
    for a, b in zip(after_msam, after_joint):  # one clean update, same as a plain step
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_dropout_masks_are_shared_by_both_passes_with_rho_zero():
    # With ρ = 0 both passes must see the same dropout mask, so M-SAM equals the plain step.
    x, y = small_batch()
    model_fn = lambda: small_av_model(dropout=0.5)  # noqa: E731
    msam, joint = _pair(keras_msam.MSAM, {"rho": 0.0}, keras_msam.Joint, {}, model_fn=model_fn)
    keras.utils.set_random_seed(7)  # unseeded torch dropout draws from the global generator
    after_msam = _one_step(msam, x, y)
    keras.utils.set_random_seed(7)
    after_joint = _one_step(joint, x, y)
    for a, b in zip(after_msam, after_joint):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


def test_logs_carry_shares_dominant_and_sharpness():
    x, y = small_batch(batch=32)
    trainer = compile_trainer(keras_msam.MSAM(small_av_model(), rho=0.05))
    history = trainer.fit(x, y, batch_size=16, epochs=2, verbose=0, validation_data=(x, y))
    logs = history.history
    for key in (
        "loss",
        "accuracy",
        "shapley_audio",
        "shapley_visual",
        "dominant",
        "sharpness",
        "val_loss",
        "val_shapley_audio",
    ):
        assert key in logs, key
    assert "val_sharpness" not in logs
    for epoch in range(2):
        assert abs(logs["shapley_audio"][epoch] + logs["shapley_visual"][epoch] - 1) < 1e-5
        assert logs["dominant"][epoch] in (0.0, 1.0)
        assert np.isfinite(logs["sharpness"][epoch])


def test_sharpness_is_the_loss_increase_at_the_perturbed_weights():
    x, y = small_batch()
    trainer = compile_trainer(keras_msam.SAM(small_av_model(), rho=0.2, log_shapley=False), lr=0.0)
    before = float(
        keras.ops.convert_to_numpy(trainer.compute_loss(x, y, trainer(x, training=True)))
    )
    logs = trainer.train_on_batch(x, y, return_dict=True)
    assert logs["loss"] == pytest.approx(before, rel=1e-5)
    assert logs["sharpness"] > 0  # a first-order ascent step increases the loss


def test_model_ignoring_a_modality_gets_share_zero_in_the_logs():
    audio = keras.Input((4,), name="audio")
    visual = keras.Input((4,), name="visual")
    encoded_audio = keras.layers.Dense(4, name="audio_dense")(audio)
    ignored = keras.layers.Lambda(lambda t: 0.0 * t)(keras.layers.Dense(4)(visual))
    model = keras.Model(
        {"audio": audio, "visual": visual}, keras.layers.Add()([encoded_audio, ignored])
    )
    model.get_layer("audio_dense").set_weights([np.eye(4, dtype="float32"), np.zeros(4, "float32")])
    rng = np.random.default_rng(0)
    x = {k: rng.standard_normal((64, 4)).astype("float32") for k in ("audio", "visual")}
    y = np.argmax(x["audio"], axis=-1)
    trainer = compile_trainer(keras_msam.MSAM(model, rho=0.05), lr=0.0)
    logs = trainer.train_on_batch(x, y, return_dict=True)
    assert logs["shapley_visual"] == 0.0
    assert logs["shapley_audio"] == 1.0
    assert logs["dominant"] == 0


@pytest.mark.parametrize(
    "options",
    [
        {"norm": "linf"},
        {"perturb": "dominant"},
        {"decomposition": "shapley_logits"},
        {"shapley_value": "neg_loss"},
        {"shapley_value": "true_class_prob", "empty_coalition": "zero"},
        {"shapley_threshold": 1, "shapley_samples": 4},
    ],
)
def test_options_train_with_finite_weights_and_change_the_step(options):
    x, y = small_batch()
    msam, reference = _pair(keras_msam.MSAM, {"rho": 0.5, **options}, keras_msam.MSAM, {"rho": 0.5})
    after = _one_step(msam, x, y)
    assert all(np.isfinite(w).all() for w in after)
    if set(options) & {"norm", "perturb", "decomposition"}:
        assert any(not np.allclose(a, b) for a, b in zip(after, _one_step(reference, x, y)))


def test_perturb_dominant_leaves_the_other_encoder_unperturbed():
    x, y = small_batch()
    msam = compile_trainer(keras_msam.MSAM(small_av_model(), rho=0.5, perturb="dominant"))
    fractions = msam._perturbed_fraction(keras.ops.convert_to_tensor(1))  # visual dominant
    groups = [msam.structure.group_index(v) for v in msam.trainable_variables]
    for group, fraction in zip(groups, fractions):
        expected = 1.0 if group in (-1, 1) else 0.0
        assert float(keras.ops.convert_to_numpy(fraction)) == expected


def test_non_finite_first_gradient_never_reaches_the_weights_through_epsilon():
    from keras_msam.perturbation import sam_perturbation

    grads = [np.array([1.0, np.nan], "float32"), np.array([2.0], "float32")]
    epsilon = [keras.ops.convert_to_numpy(e) for e in sam_perturbation(grads, 0.1)]
    assert all((e == 0).all() for e in epsilon)
    grads = [np.array([3.0, 0.0], "float32"), np.array([4.0], "float32")]
    epsilon = [keras.ops.convert_to_numpy(e) for e in sam_perturbation(grads, 0.1)]
    np.testing.assert_allclose(np.concatenate(epsilon), [0.06, 0.0, 0.08], atol=1e-7)


def test_mixed_float16_keeps_finite_weights_and_the_right_gradient_magnitude():
    x, y = small_batch()
    model32 = small_av_model()
    reference = compile_trainer(keras_msam.MSAM(model32, rho=0.05), lr=0.1)
    start = weights_of(reference)
    reference.train_on_batch(x, y)
    delta32 = [a - b for a, b in zip(weights_of(reference), start)]

    keras.config.set_dtype_policy("mixed_float16")
    model16 = small_av_model()
    model16.set_weights(start)
    trainer = compile_trainer(keras_msam.MSAM(model16, rho=0.05), lr=0.1)
    assert isinstance(trainer.optimizer, keras.optimizers.LossScaleOptimizer)
    trainer.train_on_batch(x, y)
    after = weights_of(trainer)
    assert all(np.isfinite(w).all() for w in after)
    delta16 = [a - b for a, b in zip(after, start)]
    total32 = np.sqrt(sum((d**2).sum() for d in delta32))
    total16 = np.sqrt(sum((d**2).sum() for d in delta16))
    assert total16 == pytest.approx(total32, rel=0.05)  # not 2^15 times too small or large


def test_save_load_and_continue_equals_never_stopping(tmp_path):
    loaded, _ = assert_resume_equals_never_stopping(
        tmp_path,
        small_av_model,
        lambda model: keras_msam.MSAM(model, rho=0.1),
        steps_before=2,
        steps_after=2,
    )
    assert isinstance(loaded, keras_msam.MSAM) and loaded.rho == 0.1


def test_evaluate_and_predict_work_and_validate_inputs():
    x, y = small_batch()
    trainer = compile_trainer(keras_msam.SAM(small_av_model()))
    trainer.fit(x, y, epochs=1, verbose=0)
    results = trainer.evaluate(x, y, verbose=0, return_dict=True)
    assert set(results) >= {"loss", "accuracy", "shapley_audio", "shapley_visual"}
    predictions = trainer.predict(x, verbose=0)
    np.testing.assert_allclose(
        predictions, keras.ops.convert_to_numpy(trainer.model(x)), rtol=1e-5, atol=1e-6
    )


@pytest.mark.skipif(
    keras.backend.backend() == "torch",
    reason="Keras 3.15 supports steps_per_execution > 1 only on jax/tensorflow",
)
def test_steps_per_execution():
    x, y = small_batch(batch=64)
    trainer = compile_trainer(keras_msam.MSAM(small_av_model()), steps_per_execution=2)
    history = trainer.fit(x, y, batch_size=16, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert int(keras.ops.convert_to_numpy(trainer.optimizer.iterations)) == 4


def test_any_keras_optimizer_and_callbacks():
    x, y = small_batch(batch=32)
    trainer = keras_msam.MSAM(small_av_model())
    trainer.compile(
        optimizer=keras.optimizers.AdamW(1e-3, weight_decay=1e-4),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    seen = []
    callback = keras.callbacks.LambdaCallback(on_train_batch_end=lambda b, logs: seen.append(logs))
    trainer.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[callback])
    assert len(seen) == 2 and "shapley_audio" in seen[0]


# --------------------------------------------------------------------------------------------
# Bad input


def test_bad_batches_give_clear_errors():
    x, y = small_batch()
    trainer = compile_trainer(keras_msam.MSAM(small_av_model()))
    with pytest.raises(ValueError, match=r"missing modality key\(s\) \['visual'\]"):
        trainer.fit({"audio": x["audio"]}, y, verbose=0)
    with pytest.raises(ValueError, match=r"unexpected key\(s\) \['text'\]"):
        trainer.fit({**x, "text": x["audio"]}, y, verbose=0)
    with pytest.raises(ValueError, match="dict keyed by modality name"):
        trainer.fit(x["audio"], y, verbose=0)
    with pytest.raises(ValueError, match=r"Modality 'visual' has shape .*expected \(batch, 4\)"):
        trainer.fit({"audio": x["audio"], "visual": x["audio"]}, y, verbose=0)


def test_bad_arguments_give_clear_errors():
    audio = keras.Input((3,), name="audio")
    single = keras.Model({"audio": audio}, keras.layers.Dense(2)(audio))
    with pytest.raises(ValueError, match="two or more"):
        keras_msam.MSAM(single)
    keras_msam.SAM(single)  # SAM and Joint work with one modality
    with pytest.raises(ValueError, match="rho must be >= 0"):
        keras_msam.MSAM(small_av_model(), rho=-0.1)
    with pytest.raises(ValueError, match="rho must be >= 0"):
        keras_msam.SAM(small_av_model(), rho=float("nan"))
    for kwargs, message in (
        ({"norm": "l3"}, "Unknown norm"),
        ({"perturb": "audio"}, "Unknown perturb"),
        ({"decomposition": "grads"}, "Unknown decomposition"),
        ({"shapley_value": "f1"}, "Unknown shapley_value"),
        ({"empty_coalition": "skip"}, "Unknown empty_coalition"),
        ({"fixed_dominant_share": 2.0}, "fixed_dominant_share"),
    ):
        with pytest.raises(ValueError, match=message):
            keras_msam.MSAM(small_av_model(), **kwargs)
    with pytest.raises(ValueError, match="wraps a keras.Model"):
        keras_msam.MSAM(lambda x: x)


@pytest.mark.parametrize("batch_norm", [False, True])
def test_coalition_outputs_equal_one_forward_per_coalition(batch_norm):
    model = small_av_model(batch_norm=batch_norm)
    trainer = keras_msam.MSAM(model)
    assert trainer._training_invariant is (not batch_norm)
    x, _ = small_batch()
    tensors = {k: keras.ops.convert_to_tensor(v) for k, v in x.items()}
    trainable = [v.value for v in trainer.trainable_variables]
    non_trainable = [v.value for v in trainer.non_trainable_variables]
    full = model(tensors, training=False) if trainer._training_invariant else None
    outputs = keras.ops.convert_to_numpy(
        trainer._coalition_outputs(trainable, non_trainable, tensors, full)
    )
    assert outputs.shape == (4, 16, 4)
    for k, mask in enumerate(trainer._plan.masks):
        zeroed = {
            n: x[n] if mask[i] else np.zeros_like(x[n]) for i, n in enumerate(("audio", "visual"))
        }
        expected = keras.ops.convert_to_numpy(model(zeroed, training=False))
        np.testing.assert_allclose(outputs[k], expected, rtol=1e-5, atol=1e-6)


def test_training_invariance_detection():
    from keras_msam.trainers.base import is_training_invariant

    assert is_training_invariant(small_av_model())
    assert not is_training_invariant(small_av_model(batch_norm=True))
    assert not is_training_invariant(small_av_model(dropout=0.1))
    inputs = keras.Input((5, 3), name="audio")
    assert is_training_invariant(keras.Model(inputs, keras.layers.GRU(4)(inputs)))
    assert not is_training_invariant(keras.Model(inputs, keras.layers.GRU(4, dropout=0.2)(inputs)))


def test_non_finite_gradient_under_loss_scaling_skips_the_step_and_keeps_weights():
    keras.config.set_dtype_policy("mixed_float16")
    trainer = compile_trainer(keras_msam.MSAM(small_av_model(), rho=0.05), momentum=0.9)
    x, y = small_batch()
    start = weights_of(trainer)
    scale_before = float(trainer.optimizer.initial_scale)
    poisoned = {**x, "audio": np.full_like(x["audio"], 1e9)}  # overflows float16: inf/NaN grads
    trainer.train_on_batch(poisoned, y)
    for before, after in zip(start, weights_of(trainer)):
        np.testing.assert_array_equal(before, after)
    assert float(keras.ops.convert_to_numpy(trainer.optimizer.dynamic_scale)) < scale_before
    trainer.train_on_batch(x, y)  # training carries on with finite weights
    after = weights_of(trainer)
    assert all(np.isfinite(w).all() for w in after)
    assert any(not np.array_equal(a, b) for a, b in zip(start, after))


@pytest.mark.parametrize("name", ["late_fusion_av_cnn", "early_fusion_av_cnn"])
def test_feature_coalitions_equal_input_coalitions_on_zoo_models(name):
    import zoo

    model = zoo.models.create(name, audio_shape=(12, 12, 1), visual_shape=(10, 10, 1))
    rng = np.random.default_rng(0)
    x = {
        "audio": rng.standard_normal((8, 12, 12, 1)).astype("float32"),
        "visual": rng.standard_normal((8, 10, 10, 1)).astype("float32"),
    }
    y = rng.integers(0, 10, size=8)
    tensors = {k: keras.ops.convert_to_tensor(v) for k, v in x.items()}
    by_inputs = keras_msam.MSAM(model, coalitions="inputs")
    by_features = keras_msam.MSAM(model)  # "auto" picks features for zoo models
    assert by_features._feature_coalitions and not by_inputs._feature_coalitions
    trainable = [v.value for v in by_inputs.trainable_variables]
    non_trainable = [v.value for v in by_inputs.non_trainable_variables]
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(
            by_features._coalition_outputs(trainable, non_trainable, tensors)
        ),
        keras.ops.convert_to_numpy(by_inputs._coalition_outputs(trainable, non_trainable, tensors)),
        rtol=1e-5,
        atol=1e-6,
    )
    twin = zoo.models.create(name, audio_shape=(12, 12, 1), visual_shape=(10, 10, 1))
    twin.set_weights(model.get_weights())
    steps = []
    for trainer in (
        compile_trainer(keras_msam.MSAM(twin, coalitions="inputs")),
        compile_trainer(keras_msam.MSAM(model, coalitions="features")),
    ):
        logs = trainer.train_on_batch(x, y, return_dict=True)
        steps.append((logs["shapley_audio"], weights_of(trainer)))
    assert steps[0][0] == pytest.approx(steps[1][0], abs=1e-6)
    for a, b in zip(steps[0][1], steps[1][1]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_feature_coalitions_need_encoders():
    with pytest.raises(ValueError, match="coalitions='features' needs a model with per-modality"):
        keras_msam.MSAM(small_av_model(), coalitions="features")
    with pytest.raises(ValueError, match="Unknown coalitions"):
        keras_msam.MSAM(small_av_model(), coalitions="latent")


@pytest.mark.parametrize("chunk", [1, 2])
def test_chunked_coalition_forwards_change_no_value(chunk):
    names = ("a", "b", "c")
    inputs = {n: keras.Input((3,), name=n) for n in names}
    joined = keras.layers.Concatenate()(
        [keras.layers.Dense(4, name=f"{n}_enc")(inputs[n]) for n in names]
    )
    make = lambda: keras.Model(inputs, keras.layers.Dense(3)(joined))  # noqa: E731
    model = make()
    rng = np.random.default_rng(0)
    x = {n: rng.standard_normal((8, 3)).astype("float32") for n in names}
    y = rng.integers(0, 3, size=8)
    tensors = {k: keras.ops.convert_to_tensor(v) for k, v in x.items()}
    whole = keras_msam.MSAM(model)
    chunked = keras_msam.MSAM(model, coalition_chunk=chunk)
    assert chunked._coalitions_per_forward(tensors, 6) == chunk
    assert whole._coalitions_per_forward(tensors, 6) == 6  # 8 x 9 floats: far under budget
    trainable = [v.value for v in whole.trainable_variables]
    non_trainable = [v.value for v in whole.non_trainable_variables]
    for full in (None, model(tensors)):
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(
                chunked._coalition_outputs(trainable, non_trainable, tensors, full)
            ),
            keras.ops.convert_to_numpy(
                whole._coalition_outputs(trainable, non_trainable, tensors, full)
            ),
            rtol=1e-6,
            atol=1e-6,
        )
    logs = compile_trainer(chunked).train_on_batch(x, y, return_dict=True)
    assert np.isfinite(logs["loss"])
    with pytest.raises(ValueError, match="coalition_chunk must be a positive integer"):
        keras_msam.MSAM(model, coalition_chunk=0)
