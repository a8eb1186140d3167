"""FSDD and AV-Digits loaders on the real recordings in ../shared/data/fsdd (skipped without)."""

from __future__ import annotations

import os
import shutil
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
    pytest.mark.backend_agnostic,  # numpy only: run on one backend
]


@pytest.fixture(autouse=True)
def _needs_audio_packages(tmp_path_factory, monkeypatch):
    pytest.importorskip("soundfile")
    pytest.importorskip("librosa")
    # the loaders' default disk cache goes to a temporary directory, never the user's home
    monkeypatch.setenv("KERAS_MSAM_CACHE_DIR", str(tmp_path_factory.mktemp("feature-cache")))


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


# ------------------------------------------------- fast (vectorised, disk-cached) feature path
def real_paths(step: int = 10) -> list[str]:
    folder = FSDD_ROOT / "recordings"
    return [str(folder / n) for n in sorted(os.listdir(folder)) if n.endswith(".wav")][::step]


def copy_recordings(folder: Path, count: int) -> list[Path]:
    """Copies the first ``count`` test-split (take < 5) recordings into ``folder``/recordings."""
    (folder / "recordings").mkdir(parents=True)
    chosen = [p for p in real_paths(1) if int(Path(p).stem.split("_")[2]) < 5][:count]
    return [Path(shutil.copy2(p, folder / "recordings")) for p in chosen]


@pytest.mark.parametrize(
    "settings",
    [{}, {"num_mels": 64, "num_frames": 50, "n_fft": 512}, {"duration": 1.5, "n_fft": 255}],
)
def test_vectorised_features_match_the_per_file_librosa_reference(settings):
    from zoo.datasets import fsdd

    paths = real_paths(step=10 if not settings else 60)  # 300 (50) clips of every length
    features = fsdd.SpeechFeatures(**settings)
    reference = np.stack([features(p) for p in paths])
    fast, errors = features.compute_many(paths)
    assert errors == {} and fast.shape == reference.shape and fast.dtype == np.float32
    np.testing.assert_allclose(fast, reference, rtol=0, atol=1e-4)
    assert np.abs(fast - reference).mean() < 1e-6
    wave = fsdd.SpeechFeatures("waveform")
    np.testing.assert_array_equal(wave.compute_many(paths)[0], np.stack([wave(p) for p in paths]))


def test_loader_batches_equal_the_per_file_path():
    common = dict(batch_size=100, shuffle=True, seed=3, split_by="speaker")
    fast = zoo.datasets.load("av_digits", FSDD_ROOT, "test", **common)
    slow = zoo.datasets.load("av_digits", FSDD_ROOT, "test", cache=False, **common)
    for index in (0, 4):
        (x_fast, y_fast), (x_slow, y_slow) = fast[index], slow[index]
        np.testing.assert_array_equal(y_fast, y_slow)
        np.testing.assert_array_equal(x_fast["visual"], x_slow["visual"])
        np.testing.assert_allclose(x_fast["audio"], x_slow["audio"], rtol=0, atol=1e-4)


def test_disk_cache_is_reused_and_follows_file_changes(tmp_path, monkeypatch):
    from zoo.datasets import fsdd, fsdd_cache

    monkeypatch.setattr(fsdd_cache, "CACHE_MIN_RECORDINGS", 1)
    copies = copy_recordings(tmp_path / "data", 12)
    cache_dir = tmp_path / "cache"
    computed = []
    original = fsdd.SpeechFeatures.compute_many

    def counting(self, paths, stamps=None):
        computed.append(len(paths))
        return original(self, paths, stamps)

    monkeypatch.setattr(fsdd.SpeechFeatures, "compute_many", counting)

    def features():
        x, _ = zoo.datasets.load(
            "fsdd", tmp_path / "data", "test", as_numpy=True, feature_cache=cache_dir
        )
        fsdd_cache.wait_for_cache_writes()
        return x["audio"]

    first = features()
    assert computed == [12] and len(list((cache_dir / "fsdd").glob("*.cache"))) == 1
    np.testing.assert_array_equal(features(), first)  # read back, nothing decoded
    assert computed == [12]
    os.utime(copies[3], ns=(0, 10**18))  # a changed file is decoded again, alone
    np.testing.assert_array_equal(features(), first)
    assert computed == [12, 1]
    other = zoo.datasets.load(  # other settings: another cache file
        "fsdd", tmp_path / "data", "test", as_numpy=True, feature_cache=cache_dir, num_mels=32
    )
    fsdd_cache.wait_for_cache_writes()
    assert other[0]["audio"].shape == (12, 32, 40, 1) and computed == [12, 1, 12]
    assert len(list((cache_dir / "fsdd").glob("*.cache"))) == 2
    default = fsdd_cache.FeatureCache(
        str(cache_dir), str(tmp_path / "data" / "recordings"), fsdd.SpeechFeatures().settings
    )
    Path(default.path).write_bytes(b"garbage")  # a corrupt cache file is recomputed, rewritten
    np.testing.assert_array_equal(features(), first)
    np.testing.assert_array_equal(features(), first)
    assert computed == [12, 1, 12, 12]


def test_default_cache_dir_is_the_users_cache(monkeypatch, tmp_path):
    from zoo.datasets import fsdd_cache

    monkeypatch.setenv("KERAS_MSAM_CACHE_DIR", str(tmp_path / "mine"))
    assert fsdd_cache.default_cache_dir() == str(tmp_path / "mine")
    monkeypatch.delenv("KERAS_MSAM_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert fsdd_cache.default_cache_dir() == str(tmp_path / "xdg" / "keras-msam")
    monkeypatch.delenv("XDG_CACHE_HOME")
    expected = os.path.join(os.path.expanduser("~"), ".cache", "keras-msam")
    assert fsdd_cache.default_cache_dir() == expected
    assert fsdd_cache.resolve_cache_dir(False) is None and (
        fsdd_cache.resolve_cache_dir(tmp_path) == str(tmp_path)
    )


def test_unreadable_file_in_the_fast_path_raises_or_is_skipped(tmp_path):
    copies = copy_recordings(tmp_path, 8)
    copies[2].write_bytes(copies[2].read_bytes()[:30])  # truncated inside the header
    with pytest.raises(zoo.datasets.DataFormatError, match="unreadable audio file") as caught:
        zoo.datasets.load("fsdd", tmp_path, "test", as_numpy=True)
    assert caught.value.path == str(copies[2])
    dataset = zoo.datasets.load("fsdd", tmp_path, "test", batch_size=8, on_error="skip")
    with pytest.warns(RuntimeWarning, match="skipped so far"):
        x, y = dataset[0]
    assert x["audio"].shape == (7, 40, 40, 1) and list(dataset.skipped_files) == [str(copies[2])]
