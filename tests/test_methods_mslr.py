"""MSLR: the official epoch-end rule (fixture from the authors' code), the scaled step against
the plain step, fit's update from validation data, three modalities, saving and bad options.
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
    small_av_model,
    small_batch,
    three_modality_functional_model,
    weights_of,
)

import keras_msam
from keras_msam.evaluation import modality_accuracies
from keras_msam.trainers.mslr import MSLR, update_ratios

FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "mslr_reference.json").read_text())


def _run_rule(accuracies: np.ndarray, size: int = 5) -> list[np.ndarray]:
    memory, count, ratios = np.zeros((size, accuracies.shape[1])), 0, np.ones(accuracies.shape[1])
    out = []
    for row in accuracies:
        memory, count, ratios = update_ratios(memory, count, row, ratios)
        out.append(ratios)
    return out


def test_the_ratio_rule_equals_the_authors_code():
    ratios = _run_rule(np.array(FIXTURE["accuracies"]))
    np.testing.assert_allclose(ratios, FIXTURE["ratios"], rtol=1e-12)
    coefficients = np.array(ratios) * [FIXTURE["initial"]["audio"], FIXTURE["initial"]["visual"]]
    np.testing.assert_allclose(coefficients, FIXTURE["coefficients"], rtol=1e-12)


def test_the_ratio_rule_against_a_direct_reading():
    rng = np.random.default_rng(4)
    accuracies = rng.uniform(0.1, 1.0, size=(8, 3))
    ratios = _run_rule(accuracies, size=3)
    for epoch in range(8):
        if epoch < 3:
            np.testing.assert_allclose(ratios[epoch], 1.0)
        else:
            expected = accuracies[epoch] / accuracies[epoch - 3 : epoch].mean(axis=0)
            np.testing.assert_allclose(ratios[epoch], expected, rtol=1e-12)


def _set_ratios(trainer, values):
    trainer._ratios.assign(np.asarray(values, "float32"))


def test_a_step_scales_each_encoder_update_by_its_factor_and_keeps_the_shared_one():
    x, y = small_batch()
    first, second = small_av_model(), small_av_model()
    copy_state(first, second)
    mslr = compile_trainer(MSLR(first, log_shapley=False))
    joint = compile_trainer(keras_msam.Joint(second, log_shapley=False))
    _set_ratios(mslr, FIXTURE["ratios"][-1])
    before = weights_of(mslr)
    logs = mslr.train_on_batch(x, y, return_dict=True)
    joint.train_on_batch(x, y)
    factors = np.array(FIXTURE["coefficients"][-1])
    np.testing.assert_allclose(
        [logs["mslr_factor_audio"], logs["mslr_factor_visual"]], factors, rtol=1e-6
    )
    groups = [mslr.structure.group_index(v) for v in mslr.trainable_variables]
    assert sorted(set(groups)) == [-1, 0, 1]
    for b, a, j, group in zip(before, weights_of(mslr), weights_of(joint), groups, strict=True):
        scale = 1.0 if group < 0 else factors[group]
        np.testing.assert_allclose(a - b, scale * (j - b), rtol=1e-4, atol=1e-7)


def test_outside_the_window_the_step_is_the_plain_step():
    x, y = small_batch()
    first, second = small_av_model(), small_av_model()
    copy_state(first, second)
    mslr = compile_trainer(MSLR(first, modulation_epochs=(3, 5), log_shapley=False))
    joint = compile_trainer(keras_msam.Joint(second, log_shapley=False))
    _set_ratios(mslr, [2.0, 0.5])
    mslr.train_on_batch(x, y)  # epoch counter 0: outside (3, 5)
    joint.train_on_batch(x, y)
    for a, b in zip(weights_of(mslr), weights_of(joint), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


class _Accuracies(keras.callbacks.Callback):
    def __init__(self, trainer, data):
        super().__init__()
        self.trainer, self.data, self.seen = trainer, data, []

    def on_epoch_end(self, epoch, logs=None):
        acc = modality_accuracies(self.trainer, *self.data)
        self.seen.append([acc["audio"], acc["visual"]])


def test_fit_updates_the_ratios_from_unimodal_validation_accuracy():
    x, y = small_batch(64)
    val = small_batch(32, seed=1)
    trainer = compile_trainer(MSLR(small_av_model(), memory=1, log_shapley=False))
    probe = _Accuracies(trainer, val)
    history = trainer.fit(
        x, y, batch_size=16, epochs=3, verbose=0, validation_data=val, callbacks=[probe]
    )
    seen = np.array(probe.seen)
    expected = _run_rule(seen, size=1)
    np.testing.assert_allclose(list(trainer.ratios.values()), expected[-1], rtol=1e-5)
    # epoch e trains with the ratios of the update after epoch e - 1
    factors = np.array(history.history["mslr_factor_audio"]) / 0.9
    np.testing.assert_allclose(factors, [1.0, expected[0][0], expected[1][0]], rtol=1e-5)


def test_fit_without_validation_data_is_refused():
    x, y = small_batch(32)
    trainer = compile_trainer(MSLR(small_av_model()))
    with pytest.raises(ValueError, match="MSLR .*validation_data"):
        trainer.fit(x, y, epochs=1, verbose=0)


def test_three_modalities_with_named_factors_and_validation_split():
    rng = np.random.default_rng(0)
    x = {n: rng.standard_normal((48, 3)).astype("float32") for n in ("audio", "text", "visual")}
    y = rng.integers(0, 3, size=48).astype("int32")
    trainer = compile_trainer(
        MSLR(
            three_modality_functional_model(),
            initial_factors={"text": 1.3},
            memory=1,
            log_shapley=False,
        )
    )
    history = trainer.fit(x, y, batch_size=16, epochs=2, verbose=0, validation_split=0.25)
    assert trainer.initial_factors == {"audio": 1.0, "text": 1.3, "visual": 1.0}
    np.testing.assert_allclose(history.history["mslr_factor_text"][0], 1.3, rtol=1e-6)
    assert np.all(np.isfinite(history.history["loss"]))
    assert set(trainer.ratios) == {"audio", "text", "visual"}


def test_save_load_and_continue_equals_never_stopping(tmp_path):
    loaded, _ = assert_resume_equals_never_stopping(
        tmp_path,
        small_av_model,
        lambda model: MSLR(model, initial_factors={"audio": 0.8, "visual": 1.2}, memory=3),
        prepare=lambda trainer: _set_ratios(trainer, [1.4, 0.7]),
    )
    assert loaded.initial_factors == {"audio": 0.8, "visual": 1.2} and loaded.memory == 3
    np.testing.assert_allclose(list(loaded.ratios.values()), [1.4, 0.7], rtol=1e-6)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"initial_factors": {"audio": 0.0}}, r"MSLR initial_factors\['audio'\]"),
        ({"initial_factors": {"speech": 1.0}}, "MSLR initial_factors names \\['speech'\\]"),
        ({"initial_factors": [0.9, 1.1]}, "MSLR initial_factors must be a mapping"),
        ({"memory": 0}, "MSLR memory must be an integer >= 1"),
        ({"modulation_epochs": (3, 1)}, "MSLR modulation_epochs"),
    ],
)
def test_bad_options_name_the_method_and_the_option(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MSLR(small_av_model(), **kwargs)


def test_a_single_modality_model_is_refused():
    audio = keras.Input((3,), name="audio")
    model = keras.Model({"audio": audio}, keras.layers.Dense(2)(audio))
    with pytest.raises(ValueError, match="modalit"):
        MSLR(model)
