"""OPM: the drop probabilities and the drop equal the authors' functions (fixture), the leader
drops and the weakest never does, warm-up and p_exe, other fusions, saving and bad options.
Runs on the backend of KERAS_BACKEND."""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import pytest
from conftest import (
    assert_resume_equals_never_stopping,
    compile_trainer,
    copy_state,
    small_batch,
    three_modality_data,
    three_modality_zoo_model,
    tiny_zoo_model,
    to_numpy,
    weights_of,
)

import keras_msam
from keras_msam.trainers.opm import OPM, drop_features, drop_probabilities
from zoo.models.fusions import ConcatFusion, GatedFusion

FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "opm_reference.json").read_text())
NAMES = ("audio", "visual")


def test_the_drop_probabilities_equal_the_authors_function():
    for pair, expected in zip(FIXTURE["pairs"], FIXTURE["q"], strict=True):
        q = drop_probabilities(keras.ops.convert_to_tensor(pair), FIXTURE["q_base"], FIXTURE["lam"])
        np.testing.assert_allclose(to_numpy(q), expected, rtol=1e-6, atol=1e-7)


def test_the_drop_equals_the_authors_drop_and_its_gradient():
    features = {n: np.array(FIXTURE["features"][n], "float32") for n in NAMES}
    keep = keras.ops.convert_to_tensor(np.array(FIXTURE["mask"], "float32"))
    q = keras.ops.convert_to_tensor(np.array(FIXTURE["drop_q"], "float32"))
    dropped = drop_features(features, NAMES, keep, q, [4, 4])
    for name in NAMES:
        np.testing.assert_allclose(to_numpy(dropped[name]), FIXTURE["dropped"][name], rtol=1e-6)
    # d/dφ of Σ upstream · dropped(φ) is keep · upstream / (1 − θ): the official backward
    scale = 1.0 / (1.0 - FIXTURE["theta"])
    upstream = np.array(FIXTURE["upstream"])
    mask = np.array(FIXTURE["mask"])
    for index, name in enumerate(NAMES):
        expected = mask[index][:, None] * scale * upstream[index]
        np.testing.assert_allclose(expected, FIXTURE["feature_grads"][name], rtol=1e-5)


def test_the_weakest_modality_never_drops():
    rng = np.random.default_rng(0)
    for _ in range(50):
        performance = rng.uniform(0.1, 10.0, size=rng.integers(2, 5))
        q = to_numpy(drop_probabilities(keras.ops.convert_to_tensor(performance), 0.5, 0.5))
        assert q[np.argmin(performance)] == 0.0
        assert np.all((q == 0) | ((q >= 0.5) & (q <= 0.75 + 1e-6)))


def test_the_leader_drops_at_its_rate_and_the_other_never():
    x, y = small_batch(512)
    x["audio"] = x["audio"] + 3.0 * np.eye(6, dtype="float32")[y % 6]  # audio leads
    trainer = compile_trainer(OPM(tiny_zoo_model(), p_exe=1.0, warmup_epochs=0, seed=1))
    trainer.fit(x, y, batch_size=512, epochs=30, verbose=0)  # let audio take the lead
    logs = trainer.train_on_batch(x, y, return_dict=True)
    assert logs["opm_q_audio"] > 0.5 and logs["opm_q_visual"] == 0.0
    assert logs["opm_dropped_visual"] == 0.0
    assert logs["opm_dropped_audio"] == pytest.approx(logs["opm_q_audio"], abs=0.08)


def test_without_drops_the_step_is_the_plain_step():
    x, y = small_batch(32)
    for kwargs in ({"p_exe": 0.0, "warmup_epochs": 0}, {"p_exe": 1.0, "warmup_epochs": 3}):
        first, second = tiny_zoo_model(), tiny_zoo_model()
        copy_state(first, second)
        opm = compile_trainer(OPM(first, log_shapley=False, seed=0, **kwargs))
        joint = compile_trainer(keras_msam.Joint(second, log_shapley=False))
        logs = opm.train_on_batch(x, y, return_dict=True)
        joint.train_on_batch(x, y)
        assert logs["opm_dropped_audio"] == 0.0 and logs["opm_dropped_visual"] == 0.0
        for a, b in zip(weights_of(opm), weights_of(joint), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_gated_fusion_and_three_modalities():
    x, y = three_modality_data()
    for fusion in (GatedFusion(3, name="gated"), ConcatFusion(3, name="concat")):
        model = three_modality_zoo_model(fusion)
        trainer = compile_trainer(OPM(model, warmup_epochs=0, p_exe=1.0, log_shapley=False))
        assert trainer.unimodal == ("zero_padded" if fusion.name == "gated" else "split")
        history = trainer.fit(x, y, batch_size=16, epochs=2, verbose=0)
        assert np.all(np.isfinite(history.history["loss"]))
    with pytest.raises(ValueError, match="OPM: unimodal='split' needs"):
        OPM(three_modality_zoo_model(GatedFusion(3, name="g2")), unimodal="split")


def test_save_load_and_continue_equals_never_stopping(tmp_path):
    loaded, _ = assert_resume_equals_never_stopping(
        tmp_path,
        tiny_zoo_model,
        lambda model: OPM(model, q_base=0.6, lam=0.4, p_exe=1.0, warmup_epochs=0, seed=3),
    )
    assert (loaded.q_base, loaded.lam, loaded.p_exe, loaded.warmup_epochs) == (0.6, 0.4, 1.0, 0)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"q_base": 1.5}, "OPM q_base must be >= 0 and <= 1"),
        ({"lam": -1.0}, "OPM lam must be >= 0"),
        ({"p_exe": float("nan")}, "OPM p_exe"),
        ({"warmup_epochs": -1}, "OPM warmup_epochs must be an integer >= 0"),
        ({"unimodal": "heads"}, "OPM: Unknown unimodal 'heads'"),
    ],
)
def test_bad_options_name_the_method_and_the_option(kwargs, match):
    with pytest.raises(ValueError, match=match):
        OPM(tiny_zoo_model(), **kwargs)


def test_a_model_without_encoders_is_refused():
    inputs = {name: keras.Input((3,), name=name) for name in NAMES}
    parts = [keras.layers.Dense(4, name=f"{n}_enc")(t) for n, t in inputs.items()]
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Concatenate()(parts)))
    with pytest.raises(ValueError, match="OPM: .*encode"):
        OPM(model)
