"""MMCosine: four steps equal the authors' step (fixture), the cosine logits, inference through
them, three modalities, saving and bad options. Runs on the backend of KERAS_BACKEND."""

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

from keras_msam.trainers.mmcosine import MMCosine, cosine_logits
from zoo.models.base import MultimodalClassifier
from zoo.models.fusions import ConcatFusion, GatedFusion

FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "mmcosine_reference.json").read_text())
NAMES = ("audio", "visual")


def _fixture_model():
    encoders = {}
    for name, dim in zip(NAMES, (3, 2)):
        inputs = keras.Input((dim,), name=name)
        layer = keras.layers.Dense(FIXTURE["width"], activation="relu", name=f"{name}_net")
        encoders[name] = keras.Model(inputs, layer(inputs))
    model = MultimodalClassifier(encoders, ConcatFusion(FIXTURE["classes"], name="fusion"))
    _set(model, FIXTURE["initial"])
    return model


def _set(model, state):
    for i, name in enumerate(NAMES):
        model.encoder_list[i].get_layer(f"{name}_net").set_weights(
            [np.array(state[f"{name}_net.weight"]).T, np.array(state[f"{name}_net.bias"])]
        )
    model.fusion.head.set_weights(
        [np.array(state["fc_out.weight"]).T, np.array(state["fc_out.bias"])]
    )


def test_four_steps_equal_the_authors_step():
    model = _fixture_model()
    trainer = compile_trainer(
        MMCosine(model, scaling=FIXTURE["scaling"], log_shapley=False), lr=FIXTURE["lr"]
    )
    for batch, expected in zip(FIXTURE["batches"], FIXTURE["steps"], strict=True):
        x = {name: np.array(batch[name], "float32") for name in NAMES}
        y = np.array(batch["y"], "int32")
        np.testing.assert_allclose(to_numpy(trainer(x)), expected["logits"], atol=1e-4)
        logs = trainer.train_on_batch(x, y, return_dict=True)
        assert logs["loss"] == pytest.approx(expected["loss"], rel=1e-5)
        state = expected["weights"]
        for i, name in enumerate(NAMES):
            kernel, bias = model.encoder_list[i].get_layer(f"{name}_net").get_weights()
            np.testing.assert_allclose(kernel, np.array(state[f"{name}_net.weight"]).T, atol=2e-5)
            np.testing.assert_allclose(bias, np.array(state[f"{name}_net.bias"]), atol=2e-5)
        kernel, bias = model.fusion.head.get_weights()
        np.testing.assert_allclose(kernel, np.array(state["fc_out.weight"]).T, atol=2e-5)
        np.testing.assert_allclose(bias, np.array(state["fc_out.bias"]), atol=2e-5)


def test_the_logits_are_scaled_cosines_per_modality():
    rng = np.random.default_rng(0)
    features = {"audio": rng.standard_normal((5, 3)), "visual": rng.standard_normal((5, 2))}
    blocks = {"audio": rng.standard_normal((3, 4)), "visual": rng.standard_normal((2, 4))}
    expected = sum(
        3.0
        * (features[n] / np.linalg.norm(features[n], axis=1, keepdims=True))
        @ (blocks[n] / np.linalg.norm(blocks[n], axis=0, keepdims=True))
        for n in NAMES
    )
    got = to_numpy(cosine_logits(features, blocks, 3.0))
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    # scaling a modality's features or its class weights changes nothing
    features["audio"] = features["audio"] * 50.0
    blocks["visual"] = blocks["visual"] * 0.01
    np.testing.assert_allclose(to_numpy(cosine_logits(features, blocks, 3.0)), expected, rtol=1e-5)


def test_predict_and_evaluate_use_the_cosine_logits():
    x, y = small_batch(32)
    trainer = compile_trainer(MMCosine(tiny_zoo_model(), log_shapley=False))
    trainer.fit(x, y, batch_size=16, epochs=1, verbose=0)
    features = {k: to_numpy(v) for k, v in trainer.model.encode(x).items()}
    blocks = {k: to_numpy(v) for k, v in trainer.head_blocks().items()}
    expected = to_numpy(cosine_logits(features, blocks, 10.0))
    np.testing.assert_allclose(trainer.predict(x, verbose=0), expected, rtol=1e-4, atol=1e-5)
    accuracy = trainer.evaluate(x, y, verbose=0, return_dict=True)["accuracy"]
    assert accuracy == pytest.approx(np.mean(expected.argmax(axis=1) == y))


def test_three_modalities():
    x, y = three_modality_data()
    trainer = compile_trainer(MMCosine(three_modality_zoo_model(), log_shapley=False))
    history = trainer.fit(x, y, batch_size=16, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    assert np.max(np.abs(trainer.predict(x, verbose=0))) <= 3 * 10.0 + 1e-4


def test_save_load_and_continue_equals_never_stopping(tmp_path):
    loaded, _ = assert_resume_equals_never_stopping(
        tmp_path, tiny_zoo_model, lambda model: MMCosine(model, scaling=7.0)
    )
    assert loaded.scaling == 7.0


def test_bad_options_and_models_name_the_method():
    with pytest.raises(ValueError, match="MMCosine scaling must be > 0"):
        MMCosine(tiny_zoo_model(), scaling=0.0)
    encoders = {}
    for name, dim in (("audio", 6), ("visual", 4)):
        inputs = keras.Input((dim,), name=name)
        encoders[name] = keras.Model(inputs, keras.layers.Dense(5)(inputs))
    gated = MultimodalClassifier(encoders, GatedFusion(4, name="gated"), name="gated")
    with pytest.raises(ValueError, match="MMCosine needs linear late fusion"):
        MMCosine(gated)
