"""FSDD and AV-Digits loaders on the real recordings in ../shared/data/fsdd (skipped without)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

import zoo

FSDD_ROOT = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "fsdd"

pytestmark = [
    pytest.mark.skipif(
        not (FSDD_ROOT / "recordings").is_dir(),
        reason=f"real FSDD recordings not found at {FSDD_ROOT} (../shared/data/fsdd)",
    ),
]


@pytest.fixture(autouse=True)
def _needs_audio_packages():
    pytest.importorskip("soundfile")
    pytest.importorskip("librosa")


def test_real_fsdd_has_every_recording_in_the_documented_splits():
    report = zoo.datasets.check("fsdd", FSDD_ROOT, deep=False)
    assert report.ok, report.format()
    sizes = {s: zoo.datasets.load("fsdd", FSDD_ROOT, s).num_examples for s in ("train", "test")}
    assert sizes == {"train": 2400, "test": 300}  # takes 0-4 are the FSDD authors' test split
    test = zoo.datasets.load("fsdd", FSDD_ROOT, "test", split_by="speaker")
    speakers = {os.path.basename(p).split("_")[1] for p in test.read_example.paths}
    assert speakers == {"theo"} and test.num_examples == 500
    assert np.bincount(test.labels).tolist() == [50] * 10


def test_real_fsdd_features_are_finite_and_label_matches_file_name():
    test = zoo.datasets.load("fsdd", FSDD_ROOT, "test", batch_size=50, shuffle=True, seed=1)
    x, y = test[0]
    assert x["audio"].shape == (50, 40, 40, 1) and x["audio"].dtype == np.float32
    assert np.all(np.isfinite(x["audio"]))
    np.testing.assert_allclose(x["audio"].mean(axis=(1, 2, 3)), 0.0, atol=1e-4)  # z-scored
    names = [os.path.basename(test.read_example.paths[i]) for i in test._order[:50]]
    assert [int(n.split("_")[0]) for n in names] == y.tolist()
    wave = zoo.datasets.load("fsdd", FSDD_ROOT, "test", audio_features="waveform", batch_size=4)
    assert wave[0][0]["audio"].shape == (4, 8000) and np.abs(wave[0][0]["audio"]).max() <= 1.0


def test_real_av_digits_is_separable_in_both_modalities():
    x, y = zoo.datasets.load(
        "av_digits", FSDD_ROOT, "validation", as_numpy=True, split_by="speaker"
    )
    assert x["audio"].shape == (500, 40, 40, 1) and x["visual"].shape == (500, 28, 28, 1)
    # nearest class mean on half of the examples, scored on the other half: well above chance
    order = np.random.default_rng(0).permutation(len(y))
    fit, score = order[:250], order[250:]
    for modality in ("audio", "visual"):
        flat = x[modality].reshape(len(y), -1)
        means = np.stack([flat[fit][y[fit] == d].mean(0) for d in range(10)])
        predicted = np.argmin(((flat[score, None] - means[None]) ** 2).sum(-1), axis=1)
        assert np.mean(predicted == y[score]) > 0.3, modality
