"""MSES: the official stopping rule (fixture from the authors' code), the step of a stopped
modality, fit's stop-and-roll-back from validation losses, the unimodal cross-entropy, saving and
bad options. Runs on the backend of KERAS_BACKEND."""

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
from keras_msam.evaluation import modality_cross_entropies
from keras_msam.trainers.mses import MSES, update_stopping

FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "mses_reference.json").read_text())


def _run_rule(losses, patience, weight=0.6):
    count = np.asarray(losses).shape[1]
    state = {
        "epoch": 0,
        "best": np.full(count, np.inf),
        "best_epoch": np.zeros(count),
        "previous": np.zeros(count),
        "factors": np.ones(count),
    }
    rows, rollbacks, finished = [], [], None
    for row in losses:
        before = state["best_epoch"]
        state, improved, stopped = update_stopping(state, row, patience, weight)
        for index in np.flatnonzero(stopped):
            rollbacks.append([state["epoch"], int(state["best_epoch"][index])])
        assert np.all(improved == (state["best_epoch"] == state["epoch"]))
        assert np.all(improved | (state["best_epoch"] == before))
        rows.append(state)
        if not np.any(state["factors"]):
            finished = state["epoch"]
            break
    return rows, rollbacks, finished


def test_the_stopping_rule_equals_the_authors_code():
    case = FIXTURE["cases"]["two_stops"]
    rows, rollbacks, finished = _run_rule(
        np.array(case["losses"]), FIXTURE["patience"], FIXTURE["previous_weight"]
    )
    assert len(rows) == len(case["per_epoch"])
    for ours, theirs in zip(rows, case["per_epoch"], strict=True):
        assert ours["epoch"] == theirs["epoch"]
        np.testing.assert_array_equal(ours["factors"], theirs["ratios"])
        np.testing.assert_array_equal(ours["best_epoch"], theirs["best_epoch"])
        np.testing.assert_allclose(ours["smoothed"], theirs["smoothed"], rtol=1e-12)
    assert rollbacks == [list(pair) for pair in case["loaded"]]
    assert finished == case["finished_at"]


def test_the_smoothing_mixes_the_previous_raw_loss():
    losses = np.array([[1.0, 2.0], [3.0, 1.0], [0.5, 1.0]])
    rows, _, _ = _run_rule(losses, patience=5, weight=0.6)
    np.testing.assert_allclose(rows[0]["smoothed"], [1.0, 2.0])
    np.testing.assert_allclose(rows[1]["smoothed"], [0.6 * 1 + 0.4 * 3, 0.6 * 2 + 0.4 * 1])
    np.testing.assert_allclose(rows[2]["smoothed"], [0.6 * 3 + 0.4 * 0.5, 0.6 * 1 + 0.4 * 1])
    np.testing.assert_array_equal(rows[2]["best_epoch"], [1, 3])


def _set(trainer, variable, values):
    variable.assign(np.asarray(values, "float32"))


def test_a_stopped_modality_gets_no_update_and_the_rest_is_the_plain_step():
    x, y = small_batch()
    first, second = small_av_model(), small_av_model()
    copy_state(first, second)
    mses = compile_trainer(MSES(first, log_shapley=False))
    joint = compile_trainer(keras_msam.Joint(second, log_shapley=False))
    _set(mses, mses._factors, [0.0, 1.0])  # audio stopped
    before = weights_of(mses)
    logs = mses.train_on_batch(x, y, return_dict=True)
    joint.train_on_batch(x, y)
    assert logs["mses_factor_audio"] == 0.0 and logs["mses_factor_visual"] == 1.0
    groups = [mses.structure.group_index(v) for v in mses.trainable_variables]
    assert sorted(set(groups)) == [-1, 0, 1]
    for b, a, j, group in zip(before, weights_of(mses), weights_of(joint), groups, strict=True):
        if group == 0:
            np.testing.assert_array_equal(a, b)
        else:
            np.testing.assert_allclose(a, j, rtol=1e-5, atol=1e-7)


def _slots(trainer):
    return [np.array(keras.ops.convert_to_numpy(v)) for v in trainer._rolled_back_variables()[1]]


def test_fit_stops_a_modality_and_rolls_back_to_its_best_epoch():
    x, y = small_batch(64)
    val = small_batch(32, seed=1)
    trainer = compile_trainer(MSES(small_av_model(), patience=1, log_shapley=False), momentum=0.9)
    trainer.fit(x, y, batch_size=16, epochs=1, verbose=0, validation_data=val)
    assert trainer.best_epochs == {"audio": 1, "visual": 1}
    expected = modality_cross_entropies(trainer, *val)
    assert trainer.last_smoothed_losses == pytest.approx(expected, rel=1e-5)
    at_epoch_1, slots_1 = weights_of(trainer), _slots(trainer)
    assert any(np.any(s != 0) for s in slots_1)  # momentum is part of what rolls back
    _set(trainer, trainer._best, [-1.0, np.inf])  # audio will never improve, visual always
    trainer.fit(x, y, batch_size=16, epochs=1, verbose=0, validation_data=val)
    assert trainer.stopped == {"audio": False, "visual": False}
    assert trainer.best_epochs == {"audio": 1, "visual": 2}
    at_epoch_2 = weights_of(trainer)
    trainer.fit(x, y, batch_size=16, epochs=1, verbose=0, validation_data=val)  # 3 - 1 > 1
    assert trainer.stopped == {"audio": True, "visual": False}
    assert trainer.pending_rollbacks == ["audio"]
    assert not trainer.stop_training
    # decided at the epoch end, applied when the next epoch begins: until then the weights are
    # the ones just validated (checkpoints taken at this epoch end hold what was scored)
    assert not any(np.array_equal(a, b) for a, b in zip(weights_of(trainer), at_epoch_2))
    assert int(keras.ops.convert_to_numpy(trainer.optimizer.iterations)) == 12
    # The next epoch starts from epoch 1's weights and optimizer slots; the audio encoder then
    # gets a zero gradient, as in the official code: with SGD momentum it still moves by its
    # decaying velocity (v_k = 0.9^k v_0 from the restored slots), nothing else.
    groups = [trainer.structure.group_index(v) for v in trainer.trainable_variables]
    _set(trainer, trainer._best, [-1.0, np.inf])  # visual improves again: no second roll-back
    history = trainer.fit(x, y, batch_size=16, epochs=1, verbose=0, validation_data=val)
    assert trainer.pending_rollbacks == []
    assert history.history["mses_factor_audio"] == [0.0]
    assert int(keras.ops.convert_to_numpy(trainer.optimizer.iterations)) == 16  # kept going
    decay = sum(0.9**k for k in range(1, 5))  # 4 steps
    for a, b, v, group in zip(weights_of(trainer), at_epoch_1, slots_1, groups, strict=True):
        if group == 0:
            np.testing.assert_allclose(a, b + decay * v, rtol=1e-5, atol=1e-6)
        else:
            assert not np.allclose(a, b + decay * v, rtol=1e-5, atol=1e-6)


class _NeverImprove(keras.callbacks.Callback):
    def __init__(self, trainer):
        super().__init__()
        self.trainer = trainer

    def on_epoch_end(self, epoch, logs=None):
        if epoch == 0:
            self.trainer._best.assign(np.full(2, -1.0, "float32"))


def test_fit_ends_when_every_modality_stopped():
    x, y = small_batch(64)
    val = small_batch(32, seed=1)
    trainer = compile_trainer(MSES(small_av_model(), patience=1, log_shapley=False))
    history = trainer.fit(
        x,
        y,
        batch_size=16,
        epochs=6,
        verbose=0,
        validation_data=val,
        callbacks=[_NeverImprove(trainer)],
    )
    assert len(history.history["loss"]) == 3
    assert trainer.stopped == {"audio": True, "visual": True}
    assert trainer.pending_rollbacks == ["audio", "visual"]


def test_the_unimodal_cross_entropy_is_the_loss_of_the_zero_padded_input():
    model = small_av_model()
    x, y = small_batch(24)
    losses = modality_cross_entropies(model, x, y)
    for name, other in (("audio", "visual"), ("visual", "audio")):
        padded = {name: x[name], other: np.zeros_like(x[other])}
        logits = model(padded, training=False)
        expected = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(y, logits)
        assert losses[name] == pytest.approx(float(keras.ops.convert_to_numpy(expected)), 1e-5)


def test_the_unimodal_cross_entropy_of_probabilities_and_of_one_output():
    inputs = {name: keras.Input((3,), name=name) for name in ("audio", "visual")}
    parts = [keras.layers.Dense(2, name=f"{n}_enc")(t) for n, t in inputs.items()]
    joined = keras.layers.Concatenate()(parts)
    rng = np.random.default_rng(2)
    x = {n: rng.standard_normal((20, 3)).astype("float32") for n in inputs}
    padded = {"audio": x["audio"], "visual": np.zeros_like(x["visual"])}
    y = rng.integers(0, 3, size=20)
    softmax = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(joined))
    expected = keras.losses.SparseCategoricalCrossentropy()(y, softmax(padded))
    got = modality_cross_entropies(softmax, x, y, from_logits=False)["audio"]
    assert got == pytest.approx(float(keras.ops.convert_to_numpy(expected)), 1e-5)
    binary = keras.Model(inputs, keras.layers.Dense(1)(joined))
    labels = (y > 0).astype("float32")
    expected = keras.losses.BinaryCrossentropy(from_logits=True)(labels[:, None], binary(padded))
    got = modality_cross_entropies(binary, x, labels)["audio"]
    assert got == pytest.approx(float(keras.ops.convert_to_numpy(expected)), 1e-5)


def test_three_modalities_with_validation_split():
    rng = np.random.default_rng(0)
    x = {n: rng.standard_normal((48, 3)).astype("float32") for n in ("audio", "text", "visual")}
    y = rng.integers(0, 3, size=48).astype("int32")
    model = three_modality_functional_model()
    trainer = compile_trainer(MSES(model, patience=2, log_shapley=False))
    history = trainer.fit(x, y, batch_size=16, epochs=2, verbose=0, validation_split=0.25)
    assert set(trainer.best_epochs) == {"audio", "text", "visual"}
    assert history.history["mses_factor_text"] == [1.0, 1.0]
    assert np.all(np.isfinite(history.history["loss"]))


def test_save_load_keeps_the_stopping_state(tmp_path):
    def prepare(trainer):
        _set(trainer, trainer._factors, [0.0, 1.0])
        _set(trainer, trainer._best_epoch, [3.0, 5.0])

    loaded, _ = assert_resume_equals_never_stopping(
        tmp_path,
        small_av_model,
        lambda model: MSES(model, patience=7, previous_weight=0.3),
        prepare=prepare,
    )
    assert loaded.patience == 7 and loaded.previous_weight == 0.3
    assert loaded.stopped == {"audio": True, "visual": False}
    assert loaded.best_epochs == {"audio": 3, "visual": 5}


def test_a_stop_after_a_reload_keeps_the_weights_and_warns():
    x, y = small_batch(32)
    trainer = compile_trainer(MSES(small_av_model(), patience=1, log_shapley=False))
    trainer.train_on_batch(x, y)
    _set(trainer, trainer._epochs_seen, 5.0)  # as if reloaded after 5 epochs: no copies held
    _set(trainer, trainer._best, [-1.0, -1.0])
    _set(trainer, trainer._best_epoch, [1.0, 5.0])
    before = weights_of(trainer)
    with pytest.warns(UserWarning, match="MSES stopped modality 'audio' but holds no copy"):
        trainer.end_of_epoch((x, y))
    assert trainer.stopped == {"audio": True, "visual": False}
    for a, b in zip(weights_of(trainer), before, strict=True):
        np.testing.assert_array_equal(a, b)


def test_fit_without_validation_data_is_refused():
    x, y = small_batch(32)
    trainer = compile_trainer(MSES(small_av_model()))
    with pytest.raises(ValueError, match="MSES .*validation_data"):
        trainer.fit(x, y, epochs=1, verbose=0)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"patience": 0}, "MSES patience must be an integer >= 1"),
        ({"patience": 2.5}, "MSES patience must be an integer"),
        ({"previous_weight": 1.0}, r"MSES previous_weight must be in \[0, 1\)"),
        ({"previous_weight": -0.1}, "MSES previous_weight must be >= 0"),
        ({"previous_weight": float("nan")}, "MSES previous_weight"),
        ({"modulation_epochs": (3, 1)}, "MSES modulation_epochs"),
    ],
)
def test_bad_options_name_the_method_and_the_option(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MSES(small_av_model(), **kwargs)


def test_a_model_without_modality_encoders_is_refused():
    inputs = {name: keras.Input((3,), name=name) for name in ("audio", "visual")}
    joined = keras.layers.Concatenate()(list(inputs.values()))
    model = keras.Model(inputs, keras.layers.Dense(2)(joined), name="early")
    with pytest.raises(ValueError, match="MSES .*no modality-specific trainable variables"):
        MSES(model)
