"""Each loader reads a tiny data set in its exact real layout; broken variants fail by path."""

from __future__ import annotations

import os
import pickle

import dataset_fixtures as fx  # tests/dataset_fixtures.py (tests/ is on sys.path)
import numpy as np
import pytest

import zoo
from zoo.datasets import DataFormatError

pytestmark = pytest.mark.backend_agnostic  # numpy only: run on one backend

pytest.importorskip("soundfile")
pytest.importorskip("PIL")
pytest.importorskip("librosa")


def shapes(batch):
    x, y = batch
    return {k: v.shape for k, v in x.items()}, y.shape


# --------------------------------------------------------------------------------------- AV-MNIST
@pytest.fixture
def avmnist_root(tmp_path):
    fx.write_avmnist(str(tmp_path), num_train=30, num_test=10)
    return tmp_path


def test_avmnist_reads_multibench_layout_with_last_rows_as_validation(avmnist_root):
    train = zoo.datasets.load("avmnist", avmnist_root, "train", validation_size=5, shuffle=False)
    val = zoo.datasets.load("avmnist", avmnist_root, "validation", validation_size=5, batch_size=8)
    test = zoo.datasets.load("avmnist", avmnist_root, "test", batch_size=4)
    assert (train.num_examples, val.num_examples, test.num_examples) == (25, 5, 10)
    x, y = train[0]
    assert x["visual"].shape == (25, 28, 28, 1)  # one batch of 32 holds all 25 rows
    assert x["audio"].shape[1:] == (112, 112, 1) and x["audio"].dtype == np.float32
    assert 0.0 <= x["audio"].min() and x["audio"].max() <= 1.0
    raw = np.load(avmnist_root / "image" / "train_data.npy")
    labels = np.load(avmnist_root / "train_labels.npy")
    np.testing.assert_allclose(x["visual"][:, 0, 0, 0], raw[:25, 0] / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(y, labels[:25])
    xv, yv = val.to_numpy()
    np.testing.assert_array_equal(yv, labels[25:])
    np.testing.assert_allclose(xv["visual"].reshape(5, 784), raw[25:] / 255.0, rtol=1e-6)
    assert test[2][1].shape == (2,)  # 10 rows in batches of 4: the remainder is kept by default


def test_avmnist_default_validation_needs_5000_rows(avmnist_root):
    with pytest.raises(DataFormatError, match="validation_size=5000"):
        zoo.datasets.load("avmnist", avmnist_root, "train")


@pytest.mark.parametrize(
    "breakage, path, message",
    [
        ("missing", "audio/train_data.npy", "file is missing"),
        ("shape", "audio/train_data.npy", r"shape \(30, 112, 100\), expected \(N, 112, 112\)"),
        ("label", "train_labels.npy", "unknown label 11"),
        ("dtype", "image/train_data.npy", "expected numeric"),
        ("length", "train_labels.npy", "differ in length"),
    ],
)
def test_avmnist_broken_files_are_named(avmnist_root, breakage, path, message):
    target = avmnist_root / path
    if breakage == "missing":
        target.unlink()
    elif breakage == "shape":
        np.save(target, np.zeros((30, 112, 100), np.float32))
    elif breakage == "label":
        labels = np.load(target)
        labels[3] = 11
        np.save(target, labels)
    elif breakage == "dtype":
        np.save(target, np.full((30, 784), "x"))
    elif breakage == "length":
        np.save(target, np.zeros(29, np.int64))
    with pytest.raises(DataFormatError, match=message) as info:
        zoo.datasets.load("avmnist", avmnist_root, "train", validation_size=5)
    assert info.value.path.endswith(path)
    report = zoo.datasets.check("avmnist", avmnist_root, validation_size=5)
    assert not report.ok and any(p.path.endswith(path) for p in report.problems)


# ---------------------------------------------------------------------------------------- CREMA-D
@pytest.fixture(scope="module")
def cremad_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("cremad")
    fx.write_cremad(str(root), train_per_class=2, test_per_class=1, frames_per_clip=2)
    return root


def test_cremad_reads_ogm_ge_layout_with_ogm_ge_audio(cremad_root):
    test = zoo.datasets.load(
        "cremad", cremad_root, "test", batch_size=6, num_frames=2, image_size=32
    )
    assert test.num_examples == 6 and test.class_names == list(fx.CREMAD_EMOTIONS)
    x, y = test[0]
    assert shapes((x, y)) == ({"audio": (6, 257, 188, 1), "visual": (6, 2, 32, 32, 3)}, (6,))
    np.testing.assert_array_equal(y, np.arange(6))  # NEU..ANG -> 0..5, csv order
    assert y.dtype == np.int32 and x["audio"].dtype == np.float32
    # OGM-GE: log(|STFT| + 1e-7) of the clip resampled to 22,050 Hz and tiled to 3 s.
    import librosa

    samples, _ = librosa.load(cremad_root / "AudioWAV" / "1013_DFA_NEU_XX.wav", sr=22050)
    tiled = np.tile(samples, 3)[: 22050 * 3]
    expected = np.log(np.abs(librosa.stft(tiled, n_fft=512, hop_length=353)) + 1e-7)
    np.testing.assert_allclose(x["audio"][0, ..., 0], expected, atol=2e-3)
    # Frames are ImageNet-normalised: a mid-grey pixel is (0.5 - mean) / std.
    assert np.all(np.abs(x["visual"]) < 3.0)


def test_cremad_validation_is_a_stratified_part_of_train_csv(cremad_root):
    train = zoo.datasets.load("cremad", cremad_root, "train", validation_fraction=0.5)
    val = zoo.datasets.load("cremad", cremad_root, "validation", validation_fraction=0.5)
    assert (train.num_examples, val.num_examples) == (6, 6)
    assert sorted(val.labels.tolist()) == list(range(6))
    assert not set(train.read_example.clips) & set(val.read_example.clips)
    full = zoo.datasets.load("cremad", cremad_root, "train", validation_fraction=0)
    assert full.num_examples == 12


def test_cremad_waveform_and_channel_stacked_frames(cremad_root):
    test = zoo.datasets.load(
        "cremad",
        cremad_root,
        "test",
        batch_size=2,
        audio_features="waveform",
        num_frames=2,
        image_size=16,
        frames_layout="channels",
    )
    assert shapes(test[0]) == ({"audio": (2, 66150), "visual": (2, 16, 16, 6)}, (2,))


@pytest.fixture
def cremad_copy(tmp_path):
    clips = fx.write_cremad(str(tmp_path), train_per_class=1, test_per_class=1, frames_per_clip=1)
    assert clips["test"][:3] == ["1007_DFA_NEU_XX", "1008_DFA_HAP_XX", "1009_DFA_SAD_XX"]
    return tmp_path


def test_cremad_unknown_label_names_csv_and_line(cremad_copy):
    with open(cremad_copy / "test.csv", "a") as handle:
        handle.write("1099_DFA_XYZ_XX,XYZ\n")
    with pytest.raises(DataFormatError, match=r"line 7: unknown label 'XYZ'") as info:
        zoo.datasets.load("cremad", cremad_copy, "test")
    assert info.value.path.endswith("test.csv")


def test_cremad_missing_wav_and_frames_are_named(cremad_copy):
    os.remove(cremad_copy / "AudioWAV" / "1007_DFA_NEU_XX.wav")
    with pytest.raises(DataFormatError, match="audio file of clip") as info:
        zoo.datasets.load("cremad", cremad_copy, "test")
    assert info.value.path.endswith("1007_DFA_NEU_XX.wav")
    os.remove(cremad_copy / "train.csv")
    report = zoo.datasets.check("cremad", cremad_copy, deep=False)
    paths = [p.path for p in report.problems]
    assert any(p.endswith("train.csv") for p in paths)
    assert any(p.endswith("1007_DFA_NEU_XX.wav") for p in paths)


@pytest.mark.parametrize("keep_bytes", [20, 44])
def test_cremad_truncated_wav_raises_or_is_skipped_with_a_counted_warning(cremad_copy, keep_bytes):
    wav = cremad_copy / "AudioWAV" / "1008_DFA_HAP_XX.wav"
    fx.truncate_file(wav, keep_bytes)
    strict = zoo.datasets.load("cremad", cremad_copy, "test", batch_size=6, image_size=16)
    with pytest.raises(DataFormatError) as info:
        strict[0]
    assert info.value.path == str(wav)
    lenient = zoo.datasets.load(
        "cremad", cremad_copy, "test", batch_size=6, image_size=16, on_error="skip"
    )
    with pytest.warns(RuntimeWarning, match=r"1 file\(s\) skipped"):
        x, y = lenient[0]
    assert len(y) == 5 and 1 not in y.tolist()  # HAP (label 1) was dropped, not replaced
    assert list(lenient.skipped_files) == [str(wav)]
    lenient.on_epoch_end()
    assert lenient.num_examples == 6 and len(lenient._order) == 5
    report = zoo.datasets.check("cremad", cremad_copy)
    assert [p.path for p in report.problems] == [str(wav)]


def test_cremad_corrupt_jpg_is_named(cremad_copy):
    jpg = cremad_copy / "Image-01-FPS" / "1009_DFA_SAD_XX" / "00000.jpg"
    fx.truncate_file(jpg, 100)
    dataset = zoo.datasets.load("cremad", cremad_copy, "test", batch_size=6, image_size=16)
    with pytest.raises(DataFormatError, match="unreadable image") as info:
        dataset[0]
    assert info.value.path == str(jpg)
    report = zoo.datasets.check("cremad", cremad_copy)
    assert [p.path for p in report.problems] == [str(jpg)]


# ------------------------------------------------------------------------------- Kinetics-Sounds
@pytest.mark.parametrize("style", ["ogm_ge", "balancemm"])
def test_kinetics_sounds_reads_both_split_file_styles(tmp_path, style):
    rows = fx.write_kinetics_sounds(str(tmp_path), num_train=8, num_test=4, style=style)
    test = zoo.datasets.load("kinetics_sounds", tmp_path, "test", batch_size=4, image_size=16)
    x, y = test[0]
    assert shapes((x, y)) == ({"audio": (4, 1024, 128, 1), "visual": (4, 3, 16, 16, 3)}, (4,))
    np.testing.assert_array_equal(y, [label for _, label in rows["test"]])
    stored = np.load(tmp_path / "audio" / f"{rows['test'][0][0]}.npy")
    np.testing.assert_array_equal(x["audio"][0, ..., 0], stored)
    train = zoo.datasets.load("kinetics_sounds", tmp_path, "train", validation_fraction=0.25)
    val = zoo.datasets.load("kinetics_sounds", tmp_path, "validation", validation_fraction=0.25)
    assert train.num_examples + val.num_examples == 8 and val.num_examples >= 1


def test_kinetics_sounds_broken_variants(tmp_path):
    rows = fx.write_kinetics_sounds(str(tmp_path), num_train=4, num_test=3)
    name = rows["test"][1][0]
    np.save(tmp_path / "audio" / f"{name}.npy", np.zeros((1000, 128), np.float32))
    dataset = zoo.datasets.load("kinetics_sounds", tmp_path, "test", batch_size=3, image_size=8)
    with pytest.raises(DataFormatError, match=r"shape \(1000, 128\), expected \(1024, 128\)"):
        dataset[0]
    with open(tmp_path / "my_test.txt", "a") as handle:
        handle.write("ytextra_000000_000010,10,31\n")
    with pytest.raises(DataFormatError, match="line 4: unknown label 31"):
        zoo.datasets.load("kinetics_sounds", tmp_path, "test")
    os.remove(tmp_path / "my_train.txt")
    report = zoo.datasets.check("kinetics_sounds", tmp_path)
    messages = [str(p) for p in report.problems]
    assert any("my_train.txt: split file is missing" in m for m in messages)
    assert any(name in m and "(1024, 128)" in m for m in messages)


# -------------------------------------------------------------------------------------------- AVE
def test_ave_reads_annotations_splits_and_processed_features(tmp_path):
    videos = fx.write_ave(str(tmp_path))
    sizes = {}
    for split in ("train", "validation", "test"):
        dataset = zoo.datasets.load("ave", tmp_path, split, batch_size=2, image_size=16)
        sizes[split] = dataset.num_examples
        assert dataset.class_names == sorted(fx.AVE_CATEGORIES)
    assert sizes == {"train": 4, "validation": 2, "test": 2}
    train = zoo.datasets.load("ave", tmp_path, "train", batch_size=4, image_size=16, shuffle=False)
    x, y = train[0]
    assert shapes((x, y)) == ({"audio": (4, 257, 1004, 1), "visual": (4, 3, 16, 16, 3)}, (4,))
    expected = [sorted(fx.AVE_CATEGORIES).index(fx.AVE_CATEGORIES[i]) for i in range(4)]
    np.testing.assert_array_equal(y, expected)
    with open(tmp_path / "Audio-1004-SE" / f"{videos['trainSet'][0]}.pkl", "rb") as handle:
        np.testing.assert_array_equal(x["audio"][0, ..., 0], pickle.load(handle))


def test_ave_broken_variants(tmp_path):
    videos = fx.write_ave(str(tmp_path))
    with open(tmp_path / "testSet.txt", "a") as handle:
        handle.write("Accordion&ZZZ&good&0&10\n")
    with pytest.raises(DataFormatError, match="unknown label 'Accordion'") as info:
        zoo.datasets.load("ave", tmp_path, "test")
    assert info.value.path.endswith("testSet.txt")
    bad = tmp_path / "Audio-1004-SE" / f"{videos['valSet'][0]}.pkl"
    with open(bad, "wb") as handle:
        pickle.dump(np.zeros((257, 1000)), handle)
    dataset = zoo.datasets.load("ave", tmp_path, "validation", batch_size=2, image_size=8)
    with pytest.raises(DataFormatError, match=r"expected \(257, 1004\)") as info:
        dataset[0]
    assert info.value.path == str(bad)
    os.remove(tmp_path / "Annotations.txt")
    report = zoo.datasets.check("ave", tmp_path)
    assert [p.message for p in report.problems if p.path.endswith("Annotations.txt")] == [
        "file is missing"
    ]


# ----------------------------------------------------------------------------- affect pickles
def test_affect_pickle_classification_and_regression(tmp_path):
    data = fx.write_affect(str(tmp_path / "mosi_raw.pkl"))
    data["train"]["text"][2] = 0.0  # an all-zero text row is dropped, as MultiBench
    fx.write_affect(str(tmp_path / "mosi_raw.pkl"), data)
    train = zoo.datasets.load("cmu_mosi", tmp_path, "train", batch_size=4, shuffle=False)
    assert train.num_examples == 11 and train.dropped_empty_text == 1
    assert train.modalities == ("audio", "text", "visual")
    x, y = train[0]
    assert shapes((x, y)) == (
        {"audio": (4, 50, 74), "text": (4, 50, 300), "visual": (4, 50, 35)},
        (4,),
    )
    assert x["audio"][0, 2, 0] == 0.0  # -inf audio set to 0 (step 12, aligned to step 2)
    scores = np.delete(data["train"]["labels"].reshape(-1), 2)
    _, labels = train.to_numpy()
    np.testing.assert_array_equal(labels, (scores > 0).astype(np.int32))
    assert labels.dtype == np.int32 and train.num_classes == 2
    valid = zoo.datasets.load(
        "cmu_mosi", tmp_path / "mosi_raw.pkl", "validation", task="regression"
    )
    _, values = valid.to_numpy()
    np.testing.assert_allclose(values, data["valid"]["labels"].reshape(-1))
    assert values.dtype == np.float32 and valid.num_classes is None


def test_humor_regression_labels_are_plus_minus_one(tmp_path):
    data = fx.affect_data(dims=(371, 81, 300))
    data["test"]["labels"] = np.array([0, 1, 0, 1, 1, 0], np.float32)
    fx.write_affect(str(tmp_path / "humor.pkl"), data)
    x, y = zoo.datasets.load("ur_funny", tmp_path, "test", task="regression", as_numpy=True)
    np.testing.assert_array_equal(y, [-1, 1, -1, 1, 1, -1])
    assert x["visual"].shape == (6, 50, 371)


@pytest.mark.parametrize(
    "breakage, message",
    [
        ("no_split", "split 'valid' is missing"),
        ("no_key", r"lacks keys \['text'\]"),
        ("rank", r"valid/audio has shape \(6, 50\), expected \(N, T, d\)"),
        ("length", "valid arrays differ in length"),
    ],
)
def test_affect_broken_pickles_are_named(tmp_path, breakage, message):
    data = fx.affect_data(dims=(371, 81, 300))
    if breakage == "no_split":
        del data["valid"]
    elif breakage == "no_key":
        del data["valid"]["text"]
    elif breakage == "rank":
        data["valid"]["audio"] = data["valid"]["audio"][:, :, 0]
    elif breakage == "length":
        data["valid"]["labels"] = data["valid"]["labels"][:5]
    path = tmp_path / "sarcasm.pkl"
    fx.write_affect(str(path), data)
    with pytest.raises(DataFormatError, match=message) as info:
        zoo.datasets.load("mustard", tmp_path, "validation")
    assert info.value.path == str(path)
    report = zoo.datasets.check("mustard", tmp_path)
    assert [p.path for p in report.problems] == [str(path)] and "train" in report.summary


def test_affect_missing_pickle_names_the_expected_file(tmp_path):
    with pytest.raises(DataFormatError, match="mosei_raw.pkl or mosei_senti_data.pkl"):
        zoo.datasets.load("cmu_mosei", tmp_path, "train")


# ------------------------------------------------------------------------- FSDD and AV-Digits
@pytest.fixture(scope="module")
def fsdd_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("fsdd")
    fx.write_fsdd(str(root), speakers=("jackson", "nicolas", "theo"), takes=(0, 5, 10))
    return root


def test_fsdd_fixture_splits_by_take_and_by_speaker(fsdd_root):
    sizes = {s: zoo.datasets.load("fsdd", fsdd_root, s).num_examples for s in ("train", "test")}
    assert sizes == {"train": 30, "test": 30}
    by_speaker = zoo.datasets.load("fsdd", fsdd_root, "test", split_by="speaker", batch_size=30)
    assert [os.path.basename(p).split("_")[1] for p in by_speaker.read_example.paths] == [
        "theo"
    ] * 30
    x, y = by_speaker[0]
    assert shapes((x, y)) == ({"audio": (30, 40, 40, 1)}, (30,))
    np.testing.assert_array_equal(np.sort(y), np.repeat(np.arange(10), 3))


def test_fsdd_misnamed_and_truncated_files_are_reported(tmp_path):
    fx.write_fsdd(str(tmp_path), speakers=("theo",), takes=(0, 5, 12))
    fx.truncate_file(tmp_path / "recordings" / "3_theo_0.wav", 10)
    (tmp_path / "recordings" / "three_theo_1.wav").write_bytes(b"")
    (tmp_path / "recordings" / "12_theo_1.wav").write_bytes(b"")
    report = zoo.datasets.check("fsdd", tmp_path)
    messages = sorted(str(p) for p in report.problems)
    assert len(messages) == 3
    assert "12_theo_1.wav: unknown label 12" in messages[0]
    assert "3_theo_0.wav: unreadable audio file" in messages[1]
    assert "three_theo_1.wav: file name does not match" in messages[2]


def test_av_digits_pairs_by_label_deterministically(fsdd_root):
    first = zoo.datasets.load("av_digits", fsdd_root, "train", as_numpy=True, pairing_seed=3)
    again = zoo.datasets.load("av_digits", fsdd_root, "train", as_numpy=True, pairing_seed=3)
    other = zoo.datasets.load("av_digits", fsdd_root, "train", as_numpy=True, pairing_seed=4)
    (x, y), (x2, _) = first, again
    np.testing.assert_array_equal(x["visual"], x2["visual"])
    assert not np.array_equal(x["visual"], other[0]["visual"])
    assert x["visual"].shape == (30, 28, 28, 1) and x["audio"].shape == (30, 40, 40, 1)
    # every image really shows the label's digit: compare with sklearn's class means
    from sklearn.datasets import load_digits

    bunch = load_digits()
    means = np.stack([bunch.images[bunch.target == d].mean(0) for d in range(10)])
    small = x["visual"][:, 2:-2:3, 2:-2:3, 0] * 16.0
    nearest = np.argmin(((small[:, None] - means[None]) ** 2).sum((2, 3)), axis=1)
    assert np.mean(nearest == y) > 0.85


def test_av_digits_image_splits_are_disjoint():
    from zoo.datasets import av_digits

    splits = {
        s: av_digits.image_split(s)[0].reshape(-1, 64) for s in ("train", "validation", "test")
    }
    assert sum(len(a) for a in splits.values()) == 1797
    rows = {s: {a.tobytes() for a in arr} for s, arr in splits.items()}
    # sklearn's digits hold a few exact duplicates; disjointness is by index, so overlap is tiny
    assert len(rows["train"] & rows["test"]) <= 5


def test_av_digits_round_trips_through_the_avmnist_layout(fsdd_root, tmp_path):
    from zoo.datasets import av_digits

    sizes = av_digits.write_avmnist_layout(str(fsdd_root), str(tmp_path), pairing_seed=1)
    assert sizes == {"train": 30, "validation": 30, "test": 30, "validation_size": 30}
    report = zoo.datasets.check("avmnist", tmp_path, validation_size=sizes["validation_size"])
    assert report.ok, report.format()
    x, y = zoo.datasets.load("avmnist", tmp_path, "validation", as_numpy=True, validation_size=30)
    xd, yd = zoo.datasets.load("av_digits", fsdd_root, "validation", as_numpy=True, pairing_seed=1)
    np.testing.assert_array_equal(y, yd)
    np.testing.assert_allclose(x["visual"], xd["visual"], atol=1e-6)
    assert x["audio"].shape == (30, 112, 112, 1) and 0 <= x["audio"].min() <= x["audio"].max() <= 1
