"""Amortised M-SAM: Shapley shares every k steps (`shapley_every`) and LookSAM's reuse of the
sharpness direction (`sam_every`); k = 1 is exactly the every-step method."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from conftest import compile_trainer, copy_state, small_av_model, small_batch, weights_of

import keras_msam
from keras_msam.shapley import shares_and_dominant


def _twins(count: int) -> list[keras.Model]:
    models = [small_av_model() for _ in range(count)]
    for model in models[1:]:
        copy_state(models[0], model)
    return models


def _plain_gradient(weights: list[np.ndarray], x, y, lr: float) -> list[np.ndarray]:
    """g0 at ``weights``, read off one plain SGD step of a twin: Δw = −lr·g0."""
    model = small_av_model()
    model.set_weights(weights)
    joint = compile_trainer(keras_msam.Joint(model, log_shapley=False), lr=lr)
    joint.train_on_batch(x, y)
    return [(w - a) / lr for w, a in zip(weights, weights_of(joint))]


def test_k_equal_one_is_exactly_the_every_step_method():
    x, y = small_batch()
    every, amortised = _twins(2)
    every = compile_trainer(keras_msam.MSAM(every, rho=0.3), momentum=0.9)
    amortised = compile_trainer(
        keras_msam.MSAM(amortised, rho=0.3, shapley_every=1, sam_every=1), momentum=0.9
    )
    for _ in range(3):
        every.train_on_batch(x, y)
        amortised.train_on_batch(x, y)
    for a, b in zip(weights_of(every), weights_of(amortised)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("scale_mode", ["looksam", "measured"])
def test_sam_every_reuses_the_orthogonal_sharpness_direction_looksam_style(scale_mode):
    x, y = small_batch()
    lr, alpha = 0.1, 0.7
    first, reference = _twins(2)
    start = weights_of(reference)
    trainer = compile_trainer(
        keras_msam.MSAM(
            first,
            rho=0.5,
            fixed_dominant_share=1.0,
            sam_every=3,
            looksam_alpha=alpha,
            looksam_scale=scale_mode,
        ),
        lr=lr,
    )
    sam = compile_trainer(keras_msam.SAM(reference, rho=0.5), lr=lr)

    trainer.train_on_batch(x, y)  # step 0: a full SAM step
    sam.train_on_batch(x, y)
    after_first = weights_of(trainer)
    for a, b in zip(after_first, weights_of(sam)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)

    g1 = [(w - a) / lr for w, a in zip(start, after_first)]
    g0 = _plain_gradient(start, x, y, lr)
    direction = [
        np.array(keras.ops.convert_to_numpy(v))
        for v in trainer.non_trainable_variables
        if "looksam_direction" in v.name
    ]
    flat = lambda arrays: np.concatenate([a.ravel() for a in arrays])  # noqa: E731
    projection = flat(g1) @ flat(g0) / (flat(g0) @ flat(g0))
    np.testing.assert_allclose(flat(direction), flat(g1) - projection * flat(g0), atol=1e-4)
    assert abs(flat(direction) @ flat(g0)) < 1e-4 * np.linalg.norm(flat(g1)) ** 2

    trainer.train_on_batch(x, y)  # step 1: cheap, one gradient pass
    g0_now = _plain_gradient(after_first, x, y, lr)
    # LookSAM: the reused direction has norm α‖g0‖; "measured": g_v keeps its size relative to
    # the plain gradient of the full step that measured it
    reference = flat(direction) if scale_mode == "looksam" else flat(g0)
    scale = alpha * np.linalg.norm(flat(g0_now)) / np.linalg.norm(reference)
    expected = [w - lr * (g + scale * v) for w, g, v in zip(after_first, g0_now, direction)]
    for a, b in zip(weights_of(trainer), expected):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_amortise_after_takes_full_fresh_steps_during_the_warm_up():
    x, y = small_batch()
    every, warmed, cold = _twins(3)
    every = compile_trainer(keras_msam.MSAM(every, rho=0.3), momentum=0.9)
    amortised = dict(rho=0.3, shapley_every=5, sam_every=5)
    warmed = compile_trainer(keras_msam.MSAM(warmed, amortise_after=3, **amortised), momentum=0.9)
    cold = compile_trainer(keras_msam.MSAM(cold, **amortised), momentum=0.9)
    for _ in range(3):  # steps 0, 1, 2: the warm-up, full steps with fresh shares
        for trainer in (every, warmed, cold):
            trainer.train_on_batch(x, y)
    for a, b in zip(weights_of(every), weights_of(warmed)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert not all(np.allclose(a, b) for a, b in zip(weights_of(every), weights_of(cold)))
    every.train_on_batch(x, y)
    warmed.train_on_batch(x, y)  # step 3: amortised from here on (3 % 5 != 0: a cheap step)
    assert not all(
        np.allclose(a, b, rtol=1e-5, atol=1e-6)
        for a, b in zip(weights_of(every), weights_of(warmed))
    )


def test_shapley_every_reuses_shares_between_refreshes():
    x, y = small_batch(batch=32)
    trainer = compile_trainer(
        keras_msam.MSAM(
            small_av_model(), rho=0.1, shapley_every=2, shapley_value="true_class_prob"
        ),
        lr=0.5,
    )
    shares = []
    for _ in range(3):
        weights = trainer.model.get_weights()
        phi = keras_msam.shapley_values(trainer, x, y, value="true_class_prob")
        fresh, _ = shares_and_dominant(np.array([phi["audio"], phi["visual"]], "float32"))
        logs = trainer.train_on_batch(x, y, return_dict=True)
        shares.append((logs["shapley_audio"], float(keras.ops.convert_to_numpy(fresh)[0])))
        assert not all(np.allclose(a, b) for a, b in zip(weights, trainer.model.get_weights()))
    assert shares[0][0] == pytest.approx(shares[0][1], abs=1e-5)  # step 0: computed
    assert shares[1][0] == pytest.approx(shares[0][0], abs=1e-7)  # step 1: cached
    assert shares[1][1] != pytest.approx(shares[0][1], abs=1e-4)  # ...though they moved
    assert shares[2][0] == pytest.approx(shares[2][1], abs=1e-5)  # step 2: refreshed


def test_amortised_state_survives_saving(tmp_path):
    x, y = small_batch()
    trainer = compile_trainer(
        keras_msam.MSAM(small_av_model(), shapley_every=2, sam_every=2, amortise_after=4)
    )
    trainer.train_on_batch(x, y)
    trainer.save(tmp_path / "amortised.keras")
    loaded = keras.saving.load_model(tmp_path / "amortised.keras")
    assert (loaded.shapley_every, loaded.sam_every, loaded.amortise_after) == (2, 2, 4)
    for a, b in zip(loaded.non_trainable_variables, trainer.non_trainable_variables):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"shapley_every": 0}, "shapley_every must be an integer >= 1"),
        ({"sam_every": 1.5}, "sam_every must be an integer >= 1"),
        ({"shapley_every": 2, "decomposition": "shapley_logits"}, "decomposition='loss' only"),
        ({"looksam_alpha": -1.0}, "looksam_alpha must be >= 0"),
        ({"looksam_scale": "huge"}, "Unknown looksam_scale 'huge'"),
        ({"sam_every": 2, "amortise_after": -1}, "amortise_after must be an integer >= 0"),
        ({"amortise_after": 10}, "amortise_after is the warm-up of amortised M-SAM"),
    ],
)
def test_bad_amortisation_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        keras_msam.MSAM(small_av_model(), **kwargs)


@pytest.mark.parametrize("amortise_after", [0, 3])
def test_host_scheduled_and_in_graph_branches_agree(monkeypatch, amortise_after):
    # JAX picks the full/cheap step on the host; the in-graph `ops.cond` must give the same run.
    x, y = small_batch(batch=48)
    first, second = _twins(2)
    options = dict(rho=0.3, sam_every=2, amortise_after=amortise_after)
    host = compile_trainer(keras_msam.MSAM(first, **options), momentum=0.9)
    traced = compile_trainer(keras_msam.MSAM(second, **options), momentum=0.9)
    monkeypatch.setattr(traced, "_host_schedule", lambda: None)
    for trainer in (host, traced):
        trainer.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)  # 3 steps/epoch
        trainer.train_on_batch(x, y)
    for a, b in zip(weights_of(host), weights_of(traced)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    counters = [
        int(keras.ops.convert_to_numpy(t._amortised_variables["amortised_step"]))
        for t in (host, traced)
    ]
    assert counters == [7, 7]
