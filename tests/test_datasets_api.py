"""Registry, batching contract, CLI and the embedded default data set."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

import dataset_fixtures as fx  # tests/dataset_fixtures.py (tests/ is on sys.path)
import numpy as np
import pytest

import zoo
from zoo.datasets import cli, imbalanced_av

pytestmark = pytest.mark.backend_agnostic  # numpy only: run on one backend

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_registry_lists_every_format_and_suggests_close_names():
    names = zoo.datasets.list()
    for name in ("avmnist", "cremad", "kinetics_sounds", "ave", "cmu_mosi", "cmu_mosei",
                 "ur_funny", "mustard", "fsdd", "av_digits", "imbalanced_av"):  # fmt: skip
        assert name in names
        assert len(zoo.datasets.describe(name)) > 100
    assert zoo.datasets.list("cmu_*") == ["cmu_mosei", "cmu_mosi"]
    with pytest.raises(KeyError, match="Did you mean cremad"):
        zoo.datasets.load("crema_d", "x")
    with pytest.raises(ValueError, match="pass root"):
        zoo.datasets.load("cremad")
    with pytest.raises(zoo.datasets.DataFormatError, match="does not exist"):
        zoo.datasets.load("cremad", "/nonexistent/cremad")
    with pytest.raises(ValueError, match="split must be one of"):
        zoo.datasets.load("imbalanced_av", split="valid")


def test_batches_are_tuples_with_fixed_keys_seeded_shuffle_and_drop_remainder():
    def load(**kw):
        return zoo.datasets.load("imbalanced_av", split="train", num_train=100, **kw)

    dataset = load(batch_size=32, seed=5)
    assert len(dataset) == 4 and len(load(batch_size=32, drop_remainder=True)) == 3
    batch = dataset[0]
    assert type(batch) is tuple and sorted(batch[0]) == ["audio", "visual"]
    assert dataset[3][1].shape == (4,)
    same = load(batch_size=32, seed=5)
    np.testing.assert_array_equal(dataset[0][1], same[0][1])
    np.testing.assert_array_equal(dataset[0][0]["audio"], same[0][0]["audio"])
    first_epoch = dataset._order.copy()
    dataset.on_epoch_end()
    assert not np.array_equal(first_epoch, dataset._order)
    assert sorted(dataset._order) == list(range(100))
    unshuffled = zoo.datasets.load("imbalanced_av", split="test", num_test=10, batch_size=4)
    np.testing.assert_array_equal(unshuffled._order, np.arange(10))  # eval splits keep order
    with pytest.raises(ValueError, match="Unknown modalities"):
        load(modalities=["text"])
    with pytest.raises(IndexError):
        dataset[4]


def test_import_zoo_loads_no_optional_audio_or_image_package():
    # keras itself imports PIL and sklearn when they are installed; zoo must add none of them
    code = (
        "import sys, keras; "
        "optional = ('librosa', 'soundfile', 'PIL', 'sklearn'); "
        "before = {m for m in optional if m in sys.modules}; "
        "import zoo, zoo.datasets.cli; "
        "added = [m for m in optional if m in sys.modules and m not in before]; "
        "assert not added, added"
    )
    env = dict(os.environ, KERAS_BACKEND=os.environ.get("KERAS_BACKEND", "jax"))
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, env=env)


def test_missing_optional_package_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "soundfile", None)  # makes `import soundfile` fail
    (tmp_path / "recordings").mkdir()
    (tmp_path / "recordings" / "1_theo_0.wav").write_bytes(b"RIFF")
    dataset = zoo.datasets.load("fsdd", tmp_path, "test")
    with pytest.raises(
        zoo.datasets.MissingDependencyError, match=r"pip install keras-msam\[audio\]"
    ):
        dataset[0]


def run_cli(argv):
    parser = argparse.ArgumentParser(prog="keras-msam")
    cli.add_data_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_data_check_exit_codes_and_paths(tmp_path, capsys):
    fx.write_affect(str(tmp_path / "humor.pkl"), fx.affect_data(dims=(371, 81, 300)))
    assert run_cli(["data", "check", "ur_funny", str(tmp_path)]) == 0
    assert "OK" in capsys.readouterr().out
    assert run_cli(["data", "check", "mosi", str(tmp_path)]) == 2
    assert "Did you mean" in capsys.readouterr().out
    assert run_cli(["data", "check", "cmu_mosi", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "ERROR" in out and os.path.join(str(tmp_path), "mosi_raw.pkl") in out
    assert run_cli(["data", "list", "av*"]) == 0
    assert capsys.readouterr().out.split()[0] == "av_digits"


# ------------------------------------------------------------------- the embedded default set
def nearest_centroid_accuracy(train_features, y_train, test_features, y_test, classes):
    means = np.stack([train_features[y_train == c].mean(0) for c in classes])
    distances = ((test_features[:, None] - means[None]) ** 2).sum(-1)
    return float(np.mean(np.asarray(classes)[np.argmin(distances, 1)] == y_test))


def phase_free_features(x):
    """|FFT| features: the classes live in textures with random phase."""
    audio = x["audio"][..., 0]
    pitch = np.abs(np.fft.rfft(audio, axis=1)).mean(2)  # spectrum over frequency bins
    modulation = np.abs(np.fft.rfft(audio.mean(1), axis=1))  # spectrum over time
    visual = np.abs(np.fft.fft2(x["visual"][..., 0])).reshape(len(audio), -1)
    return {"audio": np.concatenate([pitch, modulation], 1), "visual": visual}


def test_imbalanced_av_is_deterministic_by_seed_and_keeps_its_contract():
    a = imbalanced_av.generate(64, 16, 32, seed=3)
    b = imbalanced_av.generate(64, 16, 32, seed=3)
    c = imbalanced_av.generate(64, 16, 32, seed=4)
    for split, size in (("train", 64), ("validation", 16), ("test", 32)):
        x, y = a[split]
        assert x["audio"].shape == (size, 40, 40, 1) and x["visual"].shape == (size, 28, 28, 1)
        assert x["audio"].dtype == np.float32 and y.dtype == np.int32
        np.testing.assert_array_equal(x["audio"], b[split][0]["audio"])
        np.testing.assert_array_equal(y, b[split][1])
    assert not np.array_equal(a["train"][0]["visual"], c["train"][0]["visual"])
    with pytest.raises(ValueError, match="num_train"):
        imbalanced_av.generate(0, 1, 1)


def test_imbalanced_av_imbalance_is_clear_and_tunable():
    def accuracies(**kw):
        data = imbalanced_av.generate(1000, 10, 500, seed=0, **kw)
        (xtr, ytr), (xte, yte) = data["train"], data["test"]
        ftr, fte = phase_free_features(xtr), phase_free_features(xte)
        pairs = nearest_centroid_accuracy(ftr["audio"], ytr // 2, fte["audio"], yte // 2, range(5))
        return pairs, {
            m: nearest_centroid_accuracy(ftr[m], ytr, fte[m], yte, range(10))
            for m in ("audio", "visual")
        }

    audio_pairs, default = accuracies()
    assert audio_pairs > 0.95  # audio: the pitch (label // 2) is easy ...
    assert default["audio"] < 0.8  # ... but its parity cue is weak: audio alone stalls
    assert default["visual"] > default["audio"] + 0.15  # visual holds all ten classes
    _, stronger_parity = accuracies(audio_parity_strength=1.0)
    assert stronger_parity["audio"] > default["audio"] + 0.2
    _, weaker_visual = accuracies(visual_strength=0.2)
    assert weaker_visual["visual"] < default["visual"] - 0.2
