"""PMR: 23 steps and 3 prototype computations equal the authors' code (fixture), the weight rule
for any number of modalities, fit's prototype passes, saving and bad options. Runs on the backend
of KERAS_BACKEND."""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import pytest
from conftest import (
    assert_resume_equals_never_stopping,
    compile_trainer,
    small_batch,
    three_modality_data,
    three_modality_zoo_model,
    tiny_zoo_model,
    to_numpy,
)

from keras_msam.trainers.pmr import PMR, prototype_similarities, prototype_weights
from zoo.models.base import MultimodalClassifier
from zoo.models.fusions import ConcatFusion

FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "pmr_reference.json").read_text())
NAMES = ("audio", "visual")


def _fixture_model():
    encoders = {}
    for name in NAMES:
        inputs = keras.Input((FIXTURE["dims"][name],), name=name)
        layer = keras.layers.Dense(FIXTURE["width"], activation="tanh", name=f"{name}_net")
        encoders[name] = keras.Model(inputs, layer(inputs))
    model = MultimodalClassifier(encoders, ConcatFusion(FIXTURE["classes"], name="fusion"))
    state = FIXTURE["initial"]
    for i, name in enumerate(NAMES):
        model.encoder_list[i].get_layer(f"{name}_net").set_weights(
            [np.array(state[f"{name}_net.weight"]).T, np.array(state[f"{name}_net.bias"])]
        )
    model.fusion.head.set_weights(
        [np.array(state["fc_out.weight"]).T, np.array(state["fc_out.bias"])]
    )
    return model


def _batch(index):
    batch = FIXTURE["batches"][index]
    x = {name: np.array(batch[name], "float32") for name in NAMES}
    return x, np.array(batch["y"], "int32")


def _first_batches(count=2):
    parts = [_batch(i) for i in range(count)]
    return {n: np.concatenate([p[0][n] for p in parts]) for n in NAMES}, np.concatenate(
        [p[1] for p in parts]
    )


def _assert_prototypes(trainer, expected):
    for name, value in zip(NAMES, expected, strict=True):
        np.testing.assert_allclose(trainer.prototypes[name], np.array(value), atol=2e-6)


def _assert_weights(model, expected):
    for i, name in enumerate(NAMES):
        kernel, bias = model.encoder_list[i].get_layer(f"{name}_net").get_weights()
        np.testing.assert_allclose(kernel, np.array(expected[f"{name}_net.weight"]).T, atol=2e-5)
        np.testing.assert_allclose(bias, np.array(expected[f"{name}_net.bias"]), atol=2e-5)
    kernel, bias = model.fusion.head.get_weights()
    np.testing.assert_allclose(kernel, np.array(expected["fc_out.weight"]).T, atol=2e-5)
    np.testing.assert_allclose(bias, np.array(expected["fc_out.bias"]), atol=2e-5)


def test_steps_and_prototypes_equal_the_authors_code():
    model = _fixture_model()
    trainer = compile_trainer(
        PMR(model, alpha=FIXTURE["alpha"], momentum=FIXTURE["momentum"], log_shapley=False),
        lr=FIXTURE["lr"],
    )
    trainer.update_prototypes(*_first_batches())
    _assert_prototypes(trainer, FIXTURE["prototypes"][0])
    step = 0
    for epoch, count in ((0, 20), (1, 3)):
        trainer._epoch.assign(float(epoch))
        for index in range(count):
            expected = FIXTURE["steps"][step]
            logs = trainer.train_on_batch(*_batch(index), return_dict=True)
            assert logs["loss"] == pytest.approx(expected["task_loss"], rel=1e-5)
            for m, name in enumerate(NAMES):
                assert logs[f"pmr_weight_{name}"] == expected["coef"][m]
                assert logs[f"pmr_score_{name}"] == pytest.approx(expected["score"][m], 1e-5)
                assert logs[f"pmr_proto_loss_{name}"] == pytest.approx(
                    expected["proto_loss"][m], 1e-5
                )
            step += 1
        _assert_weights(model, FIXTURE["weights_after_epoch"][epoch])
        trainer.update_prototypes(*_first_batches())
        _assert_prototypes(trainer, FIXTURE["prototypes"][epoch + 1])
    assert trainer.prototype_updates == 3


def test_the_weights_go_to_every_modality_but_the_best():
    scores = keras.ops.convert_to_tensor([0.2, 0.7, 0.4])
    np.testing.assert_array_equal(to_numpy(prototype_weights(scores, 0.5)), [0.5, 0.0, 0.5])
    tie = keras.ops.convert_to_tensor([0.3, 0.3])
    np.testing.assert_array_equal(to_numpy(prototype_weights(tie, 1.0)), [0.0, 0.0])


def test_the_similarity_is_minus_the_euclidean_distance():
    rng = np.random.default_rng(0)
    features, prototypes = rng.standard_normal((5, 3)), rng.standard_normal((4, 3))
    expected = -np.linalg.norm(features[:, None] - prototypes[None], axis=-1)
    got = to_numpy(prototype_similarities(features, prototypes))
    np.testing.assert_allclose(got, expected, rtol=1e-5)


class _Capture(keras.callbacks.Callback):
    def __init__(self, trainer):
        super().__init__()
        self.trainer, self.seen = trainer, []

    def on_epoch_begin(self, epoch, logs=None):
        self.seen.append(self.trainer.prototypes)


def test_fit_computes_the_prototypes_before_training_and_after_each_epoch():
    x, y = small_batch(64)
    model = tiny_zoo_model()
    trainer = compile_trainer(PMR(model, prototype_fraction=1.0, log_shapley=False))
    features = {k: to_numpy(v) for k, v in model.encode(x).items()}
    capture = _Capture(trainer)
    trainer.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[capture])
    assert trainer.prototype_updates == 3
    for name in NAMES:  # before training: class means of the initial features over all data
        expected = np.stack([features[name][y == c].mean(axis=0) for c in range(4)])
        np.testing.assert_allclose(capture.seen[0][name], expected, atol=1e-5)
        assert not np.allclose(capture.seen[1][name], expected, atol=1e-5)


def test_prototype_batches_take_the_stated_share():
    x, y = small_batch(160)
    trainer = PMR(tiny_zoo_model(), prototype_fraction=0.25)
    bx, by = trainer.prototype_batches(x, y, batch_size=16)  # 10 batches -> 2
    assert len(by) == 32 and bx["audio"].shape == (32, 6)
    trainer = PMR(tiny_zoo_model())  # 10 batches x 0.1 -> 1
    assert len(trainer.prototype_batches(x, y, batch_size=16)[1]) == 16


def test_three_modalities():
    x, y = three_modality_data()
    trainer = compile_trainer(PMR(three_modality_zoo_model(), log_shapley=False))
    history = trainer.fit(x, y, batch_size=16, epochs=2, verbose=0)
    weights = np.array([history.history[f"pmr_weight_{n}"] for n in ("audio", "text", "visual")])
    assert np.all(weights.sum(axis=0) >= 1.0 - 1e-6)  # at least one modality below the best
    assert np.all(np.isfinite(history.history["loss"]))


def _set_prototypes(trainer):
    rng = np.random.default_rng(0)
    for variable in trainer._prototypes:
        variable.assign(rng.normal(0, 0.5, variable.shape).astype("float32"))
    trainer._updates.assign(1.0)


def test_save_load_and_continue_equals_never_stopping(tmp_path):
    loaded, _ = assert_resume_equals_never_stopping(
        tmp_path,
        tiny_zoo_model,
        lambda model: PMR(model, alpha=0.7, momentum=0.3, prototype_fraction=0.5),
        prepare=_set_prototypes,
    )
    assert (loaded.alpha, loaded.momentum, loaded.prototype_fraction) == (0.7, 0.3, 0.5)
    assert loaded.prototype_updates == 1


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"alpha": -1.0}, "PMR alpha must be >= 0"),
        ({"momentum": 1.0}, r"PMR: momentum must be in \[0, 1\)"),
        ({"prototype_fraction": 0.0}, "PMR prototype_fraction must be > 0"),
        ({"prototype_fraction": 1.5}, "PMR prototype_fraction must be .*<= 1"),
        ({"modulation_epochs": (2, 1)}, "PMR modulation_epochs"),
    ],
)
def test_bad_options_name_the_method_and_the_option(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PMR(tiny_zoo_model(), **kwargs)


def test_a_model_without_encoders_is_refused():
    inputs = {name: keras.Input((3,), name=name) for name in NAMES}
    parts = [keras.layers.Dense(4, name=f"{n}_enc")(t) for n, t in inputs.items()]
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Concatenate()(parts)))
    with pytest.raises(ValueError, match="PMR: .*encode"):
        PMR(model)


def test_a_non_finite_example_is_left_out_of_the_prototypes():
    x, y = small_batch(32)
    model = tiny_zoo_model()
    trainer = PMR(model)
    bad = {k: v.copy() for k, v in x.items()}
    bad["audio"][3, 0] = np.nan
    trainer.update_prototypes(bad, y)
    features = to_numpy(model.encode(x)["audio"])
    keep = np.arange(32) != 3
    expected = np.stack([features[keep & (y == c)].mean(axis=0) for c in range(4)])
    np.testing.assert_allclose(trainer.prototypes["audio"], expected, atol=1e-5)
    assert np.all(np.isfinite(trainer.prototypes["visual"]))
