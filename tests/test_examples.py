"""The scripts in examples/ run as written (with few epochs) on the current backend."""

from __future__ import annotations

import importlib.util
import os

import pytest

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "examples")


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, os.path.join(EXAMPLES, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quickstart_trains_msam_and_reports_each_modality():
    accuracies = _load("quickstart").main(epochs=1, num_train=128)
    assert set(accuracies) == {"multimodal", "audio", "visual"}
    assert all(0.0 <= value <= 1.0 for value in accuracies.values())


def test_custom_functional_model_trains_and_saves(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    accuracies = _load("custom_model").main(epochs=2)
    assert set(accuracies) == {"multimodal", "sensor", "tabular"}
    assert accuracies["multimodal"] > 0.4  # it learnt: three balanced classes, chance is 1/3
    assert (tmp_path / "sensor_tabular.keras").exists()


def test_av_digits_config_file_is_valid():
    from keras_msam.experiments import build_config, read_config_file

    config = build_config(read_config_file(os.path.join(EXAMPLES, "av_digits.toml")))
    assert config.data == "av_digits" and config.seeds == 3
    assert dict(config.data_options) == {"split_by": "speaker"}
    assert {"joint", "msam"} <= {spec.name for spec in config.methods}


def test_av_digits_example_runs_on_real_speech(tmp_path, monkeypatch):
    from test_datasets_fsdd import FSDD_ROOT

    if not FSDD_ROOT.is_dir():
        pytest.skip("../shared/data/fsdd is not beside this checkout")
    monkeypatch.chdir(tmp_path)
    _load("av_digits").main(str(FSDD_ROOT), epochs=1, seeds=1)
    assert (tmp_path / "runs" / "av_digits-example" / "summary.csv").exists()
