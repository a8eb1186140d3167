"""The seed paper's protocols (examples/paper/*.toml) and the runner settings they need: weight
decay (coupled L2 for SGD/Adam, as PyTorch's) and learning-rate schedules (step, cosine).

Each config file runs one epoch on the tiny fixture files `dataset_fixtures` writes in the real
on-disk layouts; only the run length, the methods, the data root, the validation split of the
tiny files and the model's size are overridden."""

from __future__ import annotations

import json
import math
import os

import dataset_fixtures as fx
import keras
import numpy as np
import pytest
from conftest import small_av_model, small_batch, weights_of

import keras_msam
from keras_msam.experiments import ConfigError, build_config, read_config_file, run_experiment
from keras_msam.experiments.optimizers import make_optimizer

PAPER = os.path.join(os.path.dirname(__file__), os.pardir, "examples", "paper")
TINY_RESNET = {"width": 8}
TINY_TRANSFORMER = {
    "num_layers": 1,
    "ff_dim": 16,
    "audio_dim": 10,
    "visual_dim": 10,
    "text_dim": 10,
}


def _write_avmnist(root):
    fx.write_avmnist(root, num_train=30, num_test=10)
    return root


def _write_cremad(root):
    fx.write_cremad(root, train_per_class=2, test_per_class=1, frames_per_clip=1)
    return root


def _write_ave(root):
    fx.write_ave(root)
    return root


def _write_urfunny(root):
    fx.write_affect(os.path.join(root, "humor.pkl"), fx.affect_data(dims=(371, 81, 300)))
    return root


# config file -> (fixture writer, methods to run, data_options, model_options overrides); each
# method of the files runs on at least one model
CASES = {
    "avmnist_late.toml": (_write_avmnist, ["joint", "ogmge"], {"validation_size": 10}, {}),
    "avmnist_early.toml": (
        _write_avmnist,
        ["agm"],
        {"validation_size": 10},
        {"maxout_hidden": (32, 16)},
    ),
    "cremad_late.toml": (_write_cremad, ["msam"], {"image_size": 32}, TINY_RESNET),
    "cremad_early.toml": (
        _write_cremad,
        ["sam"],
        {"image_size": 32},
        {**TINY_RESNET, "maxout_hidden": (32, 16)},
    ),
    "urfunny_late.toml": (_write_urfunny, ["msam"], {}, TINY_TRANSFORMER),
    "ave_late.toml": (_write_ave, ["joint"], {"image_size": 32}, TINY_RESNET),
}


def test_every_paper_config_is_tested_and_reads():
    names = sorted(n for n in os.listdir(PAPER) if n.endswith(".toml"))
    assert names == sorted(CASES)
    for name in names:
        with open(os.path.join(PAPER, name)) as handle:
            text = handle.read()
        assert f"keras-msam compare --config examples/paper/{name} --data-root" in text
        config = build_config(read_config_file(os.path.join(PAPER, name)))
        assert config.seeds >= 5 and config.epochs == 100
        assert {"joint", "msam"} <= {spec.name for spec in config.methods}


def test_cremad_config_is_the_reference_code_protocol():
    config = build_config(read_config_file(os.path.join(PAPER, "cremad_late.toml")))
    assert (config.model, config.optimizer, config.lr, config.momentum) == (
        "cremad_late_resnet18",
        "sgd",
        1e-3,
        0.9,
    )
    assert (config.weight_decay, config.lr_schedule, config.lr_step_size, config.lr_gamma) == (
        1e-4,
        "step",
        70,
        0.1,
    )
    assert (config.batch_size, config.epochs) == (64, 100)


@pytest.mark.slow  # six end-to-end runs, mostly compilation: minutes together on 2 CPU cores
@pytest.mark.parametrize("name", sorted(CASES))
def test_paper_config_runs_one_epoch_on_fixture_files(name, tmp_path):
    if name.startswith("cremad"):
        pytest.importorskip("librosa")
    if not name.startswith("urfunny"):
        pytest.importorskip("PIL")
        pytest.importorskip("soundfile")
    write, methods, data_options, model_options = CASES[name]
    file_values = read_config_file(os.path.join(PAPER, name))
    declared = build_config(file_values)
    assert set(methods) <= {spec.label for spec in declared.methods}
    root = write(str(tmp_path / "data"))
    config = build_config(
        file_values,
        {
            "data_root": root,
            "epochs": 1,
            "seeds": 1,
            "methods": methods,
            "data_options": data_options,
            "model_options": model_options,
            "run_dir": str(tmp_path / "run"),
            "plots": False,
            "verbose": 0,
            "sharpness_rho": 0.0,  # the final sharpness probe is most of a tiny run's time
        },
    )
    # the protocol itself (optimizer, schedule, weight decay, batch size) is the file's
    for key in ("optimizer", "lr", "weight_decay", "lr_schedule", "lr_step_size", "batch_size"):
        assert getattr(config, key) == getattr(declared, key)
    result = run_experiment(config, log=lambda line: None)
    assert [run.method for run in result.runs] == methods
    for run in result.runs:
        assert os.path.exists(os.path.join(run.path, "metrics.json"))
        assert 0.0 <= run.accuracy <= 1.0
    recorded = json.loads((tmp_path / "run" / "config.json").read_text())["config"]
    assert recorded["model"] == declared.model and recorded["data"] == declared.data
    assert recorded["weight_decay"] == declared.weight_decay
    with open(tmp_path / "run" / "results.csv") as handle:
        rows = handle.read().splitlines()
    assert [row.split(",")[0] for row in rows[1:]] == methods


# ----------------------------------------------------------------------------- schedules
def _config(**values):
    return build_config({"lr": 0.1, "epochs": 10, **values})


def _lr_at(optimizer, step):
    optimizer.iterations.assign(step)
    return float(keras.ops.convert_to_numpy(optimizer.learning_rate))


def test_step_schedule_is_steplr_per_epoch():
    steps_per_epoch = 7
    config = _config(lr_schedule="step", lr_step_size=3, lr_gamma=0.5)
    optimizer = make_optimizer(config, steps_per_epoch=steps_per_epoch)
    for epoch in range(config.epochs):
        expected = 0.1 * 0.5 ** (epoch // 3)  # torch StepLR(3, 0.5), stepped once per epoch
        first, last = epoch * steps_per_epoch, (epoch + 1) * steps_per_epoch - 1
        assert _lr_at(optimizer, first) == pytest.approx(expected, rel=1e-6), epoch
        assert _lr_at(optimizer, last) == pytest.approx(expected, rel=1e-6), epoch
    # a resumed run restores `iterations` from its backup, and with it the learning rate
    restored = make_optimizer(config, steps_per_epoch=steps_per_epoch)
    assert _lr_at(restored, 6 * steps_per_epoch) == pytest.approx(0.1 * 0.25, rel=1e-6)


def test_cosine_schedule_decays_to_zero_over_the_run():
    config = _config(lr_schedule="cosine", epochs=4)
    optimizer = make_optimizer(config, steps_per_epoch=5)
    assert _lr_at(optimizer, 0) == pytest.approx(0.1)
    assert _lr_at(optimizer, 10) == pytest.approx(0.05, rel=1e-5)  # half way
    cosine = 0.1 * 0.5 * (1 + math.cos(math.pi * 19 / 20))
    assert _lr_at(optimizer, 19) == pytest.approx(cosine, rel=1e-4)
    assert _lr_at(optimizer, 19) < 1e-3 and _lr_at(optimizer, 20) == pytest.approx(0, abs=1e-9)


def test_constant_schedule_needs_no_steps_and_others_ask_for_them():
    assert _lr_at(make_optimizer(_config()), 12345) == pytest.approx(0.1)
    with pytest.raises(ConfigError, match="lr_schedule='step' needs the number of training steps"):
        make_optimizer(_config(lr_schedule="step"))


def test_the_runner_steps_the_schedule_by_the_training_loader_length(tmp_path):
    """train_run gives make_optimizer len(train): lr, lr*gamma, lr*gamma^2 at epochs 0, 1, 2."""
    seen = []

    class Record(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            seen.append(float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)))

        def on_train_batch_end(self, batch, logs=None):
            if batch == 2:  # a later batch of the epoch still has the epoch's rate
                lr = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
                assert lr == pytest.approx(seen[-1], rel=1e-6)

    config = build_config(
        {
            "num_train": 64,
            "batch_size": 16,
            "epochs": 3,
            "methods": ["joint"],
            "lr": 0.04,
            "lr_schedule": "step",
            "lr_step_size": 1,
            "lr_gamma": 0.5,
            "weight_decay": 1e-4,
            "run_dir": str(tmp_path / "run"),
            "plots": False,
            "verbose": 0,
        }
    )
    run_experiment(config, callbacks=lambda spec, seed: [Record()], log=lambda line: None)
    assert seen == pytest.approx([0.04, 0.02, 0.01], rel=1e-6)


# ----------------------------------------------------------------------------- weight decay
def test_sgd_weight_decay_is_coupled_l2_through_momentum():
    """Two SGD steps with momentum on fixed gradients equal torch SGD(weight_decay=wd)."""
    lr, momentum, wd = 0.1, 0.9, 0.05
    w0 = np.array([1.0, -2.0, 0.5], np.float32)
    grads = [np.array([0.3, 0.1, -0.2], np.float32), np.array([-0.1, 0.4, 0.2], np.float32)]
    variable = keras.Variable(w0)
    optimizer = make_optimizer(_config(lr=lr, momentum=momentum, weight_decay=wd))
    for g in grads:
        optimizer.apply([keras.ops.convert_to_tensor(g)], [variable])
    w, buffer = w0.astype(np.float64), np.zeros(3)
    for g in grads:  # torch: d = g + wd*w; buf = m*buf + d; w -= lr*buf (Keras: same, lr inside)
        buffer = momentum * buffer - lr * (g + wd * w)
        w = w + buffer
    np.testing.assert_allclose(keras.ops.convert_to_numpy(variable), w, rtol=1e-5)
    # Keras's own (decoupled) weight_decay takes another path once momentum carries it
    decoupled = keras.Variable(w0)
    keras_sgd = keras.optimizers.SGD(lr, momentum=momentum, weight_decay=wd)
    for g in grads:
        keras_sgd.apply([keras.ops.convert_to_tensor(g)], [decoupled])
    assert not np.allclose(keras.ops.convert_to_numpy(decoupled), w, rtol=1e-5)


def test_adam_weight_decay_is_added_to_the_gradient():
    lr, wd = 0.01, 0.5
    w0 = np.array([1.0, -2.0], np.float32)
    g = np.array([-0.4, 0.1], np.float32)  # g + wd*w flips the first entry's sign: (0.1, -0.9)
    variable = keras.Variable(w0)
    optimizer = make_optimizer(_config(optimizer="adam", lr=lr, weight_decay=wd))
    optimizer.apply([keras.ops.convert_to_tensor(g)], [variable])
    d = g + wd * w0
    expected = w0 - lr * d / (np.abs(d) + 1e-7)  # Adam's first step: lr * m_hat / sqrt(v_hat)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(variable), expected, rtol=1e-5)
    adamw = make_optimizer(_config(optimizer="adamw", lr=lr, weight_decay=wd))
    assert isinstance(adamw, keras.optimizers.AdamW) and adamw.weight_decay == pytest.approx(wd)


def test_one_training_step_of_a_trainer_adds_the_l2_term():
    """One Joint step, plain SGD: w1 = w0 - lr * (grad + wd * w0), grad from a twin without wd."""
    lr, wd = 0.1, 0.2
    x, y = small_batch()
    results = {}
    for decay in (None, wd):
        keras.utils.set_random_seed(3)
        model = small_av_model()
        trainer = keras_msam.Joint(model)
        trainer.compile(
            optimizer=make_optimizer(_config(lr=lr, momentum=0.0, weight_decay=decay)),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        trainer(x)
        before = weights_of(trainer)
        trainer.train_on_batch(x, y)
        results[decay] = (before, weights_of(trainer))
    (w0, plain), (w0_again, decayed) = results[None], results[wd]
    for a, b, p, d in zip(w0, w0_again, plain, decayed, strict=True):
        np.testing.assert_array_equal(a, b)
        grad = (a - p) / lr
        np.testing.assert_allclose(d, a - lr * (grad + wd * a), rtol=1e-4, atol=1e-6)


# ----------------------------------------------------------------------------- bad values
@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"weight_decay": -1e-4}, "weight_decay must be >= 0"),
        ({"weight_decay": "lots"}, "weight_decay must be float"),
        ({"weight_decay": float("inf")}, "weight_decay must be a finite number"),
        ({"lr_schedule": "exponential"}, "lr_schedule must be one of constant, step, cosine"),
        ({"lr_step_size": 0}, "lr_step_size must be >= 1"),
        ({"lr_step_size": -70}, "lr_step_size must be >= 1"),
        ({"lr_step_size": 2.5}, "lr_step_size must be int"),
        ({"lr_gamma": 0}, "lr_gamma must be a positive number"),
        ({"lr_gamma": -0.1}, "lr_gamma must be a positive number"),
    ],
)
def test_bad_schedule_and_weight_decay_values_name_the_setting(values, message):
    with pytest.raises(ConfigError, match=message):
        build_config(values)


def test_command_line_flags_set_the_new_settings(tmp_path):
    from keras_msam.cli.main import _config_from_args, build_parser

    path = os.path.join(PAPER, "cremad_late.toml")
    args = build_parser().parse_args(
        ["compare", "--config", path, "--weight-decay", "5e-4", "--lr-schedule", "cosine"]
    )
    config = _config_from_args(args)
    assert (config.weight_decay, config.lr_schedule, config.lr_step_size) == (5e-4, "cosine", 70)
    args = build_parser().parse_args(["compare", "--lr-step-size", "0"])
    with pytest.raises(ConfigError, match="lr_step_size must be >= 1"):
        _config_from_args(args)
    args = build_parser().parse_args(["compare", "--lr-step-size", "30", "--lr-gamma", "0.5"])
    assert (_config_from_args(args).lr_step_size, _config_from_args(args).lr_gamma) == (30, 0.5)
