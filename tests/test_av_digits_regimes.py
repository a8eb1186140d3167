"""AV-Digits imbalance regimes: degraded speech and images, a small train set, a third input.

Most tests run on small FSDD-format wav files written here (tests/dataset_fixtures.py); those
marked `real` use the real recordings in ../shared/data/fsdd and are skipped without them.
"""

from __future__ import annotations

import os
from pathlib import Path

import dataset_fixtures as fx  # tests/dataset_fixtures.py (tests/ is on sys.path)
import keras
import numpy as np
import pytest

import zoo
from zoo.datasets import av_digits, fsdd, fsdd_cache
from zoo.datasets import av_digits_regimes as regimes

pytest.importorskip("soundfile")
pytest.importorskip("librosa")

FSDD_ROOT = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "fsdd"
real = pytest.mark.skipif(
    not (FSDD_ROOT / "recordings").is_dir(),
    reason=f"real FSDD recordings not found at {FSDD_ROOT} (../shared/data/fsdd)",
)
SPLITS = ("train", "validation", "test")


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path_factory, monkeypatch):
    """The loaders' disk cache goes to a fresh temporary directory, never the user's home."""
    monkeypatch.setenv("KERAS_MSAM_CACHE_DIR", str(tmp_path_factory.mktemp("feature-cache")))


@pytest.fixture(scope="module")
def small_root(tmp_path_factory) -> str:
    """FSDD layout, 10 digits x 3 speakers x takes 0 / 5 / 10 and 11: 30 clips in test and
    validation, 60 in train (clips of 0.30-0.36 s, sine + noise)."""
    root = str(tmp_path_factory.mktemp("fsdd"))
    fx.write_fsdd(root, takes=(0, 5, 10, 11))
    return root


def load(root, split: str = "test", **options) -> tuple[dict[str, np.ndarray], np.ndarray]:
    return zoo.datasets.load("av_digits", root, split, as_numpy=True, **options)


def snr_db(clean: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """Per row, in float64: 10 log10(sum clean^2 / sum noise^2)."""
    clean, noise = clean.astype(np.float64), noise.astype(np.float64)
    return 10 * np.log10(np.square(clean).sum(1) / np.square(noise).sum(1))


# --------------------------------------------------------------------------- audio
@pytest.mark.parametrize("noise", ["babble", "white"])
@pytest.mark.parametrize("level", [-5.0, 0.0, 7.5])
def test_mixture_has_the_requested_snr_and_the_loader_gives_its_features(small_root, noise, level):
    dataset = zoo.datasets.load(
        "av_digits", small_root, "train", audio_snr_db=level, audio_noise=noise
    )
    reader = dataset.read_example.speech
    assert isinstance(reader, regimes.DegradedSpeechReader) and reader.cache_dir is None
    parts = reader.mixture()
    clean, part, counts = parts["clean"], parts["noise"], parts["counts"]
    assert counts.min() > 2000 and counts.max() < 8000  # the clips' own samples, then padding
    # noise only under the clip's active samples; mixed = clean + noise
    padding = np.arange(clean.shape[1])[None] >= counts[:, None]
    assert not part[padding].any() and not parts["mixed"][padding].any()
    np.testing.assert_allclose(parts["mixed"], clean + part, rtol=0, atol=1e-6)
    # over the active samples (the sums over the padded second are the same: zeros there)
    np.testing.assert_allclose(snr_db(clean, part), level, rtol=0, atol=0.1)
    x, _ = dataset.to_numpy()
    features = fsdd.SpeechFeatures()
    np.testing.assert_array_equal(x["audio"], features.log_mel_many(parts["mixed"], counts))
    x_clean, _ = load(small_root, "train")
    assert np.abs(x["audio"] - x_clean["audio"]).mean() > 0.05  # the features did change
    np.testing.assert_array_equal(x["visual"], x_clean["visual"])


def test_noisier_mixtures_move_the_features_further_from_the_clean_ones(small_root):
    clean, _ = load(small_root)
    distance = []
    for level in (20.0, 5.0, -5.0):
        x, _ = load(small_root, audio_snr_db=level, audio_noise="white")
        distance.append(np.abs(x["audio"] - clean["audio"]).mean())
    assert distance[0] < distance[1] < distance[2]


def test_waveform_features_are_the_mixed_waveforms(small_root):
    options = dict(audio_features="waveform", audio_snr_db=3.0, audio_noise="white")
    dataset = zoo.datasets.load("av_digits", small_root, "validation", **options)
    x, _ = dataset.to_numpy()
    np.testing.assert_array_equal(x["audio"], dataset.read_example.speech.mixture()["mixed"])
    assert x["audio"].shape == (30, 8000)


def test_babble_mixes_distinct_other_digits_scaled_to_unit_rms(small_root):
    paths = sorted(
        str(p) for p in Path(small_root, "recordings").iterdir() if p.name.endswith("_10.wav")
    )
    labels = np.array([int(os.path.basename(p)[0]) for p in paths])
    waves, counts, errors = regimes.read_waveforms(paths, 8000)
    assert errors == {} and waves.shape == (30, 8000)
    noise, sources = regimes.babble_noise(waves, counts, labels, 3, np.random.default_rng(0))
    assert sources.shape == (30, 3) and (sources >= 0).all()
    source_digits = labels[sources]
    assert (source_digits != labels[:, None]).all()  # never the example's own digit
    assert all(len(set(row)) == 3 for row in source_digits.tolist())  # 3 different talkers' digits
    assert len({tuple(row) for row in sources.tolist()}) > 20  # drawn per example
    for index in (0, 17):  # rebuilt from its sources: each at unit RMS, repeated over the clip
        expected = np.zeros(8000, np.float32)
        for source in sources[index]:
            segment = waves[source, : counts[source]].astype(np.float64)
            segment /= np.sqrt(np.mean(segment**2))
            expected[: counts[index]] += np.resize(segment, counts[index])
        np.testing.assert_allclose(noise[index], expected, rtol=0, atol=1e-5)
    single_digit = np.zeros_like(labels)
    with pytest.raises(ValueError, match="audio_noise='babble'.*1 digit"):
        regimes.babble_noise(waves, counts, single_digit, 3, np.random.default_rng(0))


def test_mix_at_snr_leaves_silent_clips_clean():
    clean = np.zeros((2, 10), np.float32)
    clean[1, :4] = 0.5
    noise = np.ones((2, 10), np.float32)
    noise[1] = 0  # silent noise
    mixed, scaled = regimes.mix_at_snr(clean, noise, np.array([4, 4]), 0.0)
    np.testing.assert_array_equal(mixed, clean)
    assert not scaled.any()


@real
@pytest.mark.parametrize("noise", ["babble", "white"])
def test_real_recordings_mixed_at_the_requested_snr(noise):
    dataset = zoo.datasets.load(
        "av_digits", FSDD_ROOT, "test", audio_snr_db=-5.0, audio_noise=noise
    )
    parts = dataset.read_example.speech.mixture()
    assert parts["errors"] == {} and len(parts["counts"]) == 300
    np.testing.assert_allclose(snr_db(parts["clean"], parts["noise"]), -5.0, rtol=0, atol=0.1)
    x, _ = dataset.to_numpy()
    expected = fsdd.SpeechFeatures().log_mel_many(parts["mixed"], parts["counts"])
    np.testing.assert_array_equal(x["audio"], expected)


@real
def test_degraded_audio_never_reads_or_writes_the_disk_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_MSAM_CACHE_DIR", str(tmp_path))
    noisy, _ = load(FSDD_ROOT, "validation", audio_snr_db=0.0)  # 300 >= 256 recordings
    fsdd_cache.wait_for_cache_writes()
    assert not list(tmp_path.rglob("*.cache"))
    clean, _ = load(FSDD_ROOT, "validation")
    fsdd_cache.wait_for_cache_writes()
    assert len(list(tmp_path.rglob("*.cache"))) == 1  # the clean features are cached
    again, _ = load(FSDD_ROOT, "validation", audio_snr_db=0.0)
    np.testing.assert_array_equal(again["audio"], noisy["audio"])  # not the cached clean ones
    assert np.abs(noisy["audio"] - clean["audio"]).mean() > 0.1
    cached, _ = load(FSDD_ROOT, "validation")
    np.testing.assert_array_equal(cached["audio"], clean["audio"])


# --------------------------------------------------------------------------- off = unchanged
def reference_arrays(root, split: str) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """AV-Digits as it was before the regimes: FSDD's audio, the paired upscaled images."""
    audio, labels = zoo.datasets.load("fsdd", root, split, as_numpy=True)
    images, image_labels = av_digits.image_split(split)
    pairs = av_digits.pair_images(labels, image_labels, 0)
    return {"audio": audio["audio"], "visual": av_digits.upscale(images[pairs])}, labels


OFF = dict(
    audio_snr_db=None,
    audio_noise="white",
    babble_talkers=2,
    visual_blur=0.0,
    visual_occlusion=0,
    visual_noise=0.0,
    train_fraction=1.0,
    third_modality=None,
    degrade_seed=7,
)


@pytest.mark.parametrize("split", SPLITS)
def test_options_that_are_off_give_exactly_the_old_arrays(small_root, split):
    expected, expected_labels = reference_arrays(small_root, split)
    for options in ({}, OFF):
        x, y = load(small_root, split, **options)
        assert sorted(x) == ["audio", "visual"]
        np.testing.assert_array_equal(y, expected_labels)
        for modality in ("audio", "visual"):
            np.testing.assert_array_equal(x[modality], expected[modality])
    dataset = zoo.datasets.load("av_digits", small_root, split, **OFF)
    assert type(dataset.read_example.speech) is fsdd.FSDDReader  # the cached clean path


@real
def test_real_options_that_are_off_give_exactly_the_old_arrays():
    expected, expected_labels = reference_arrays(FSDD_ROOT, "test")
    x, y = load(FSDD_ROOT, "test", **OFF)
    np.testing.assert_array_equal(y, expected_labels)
    for modality in ("audio", "visual"):
        np.testing.assert_array_equal(x[modality], expected[modality])


# --------------------------------------------------------------------------- determinism
EVERYTHING = dict(
    audio_snr_db=0.0,
    visual_blur=1.0,
    visual_occlusion=0.2,
    visual_noise=0.1,
    train_fraction=0.5,
    third_modality="visual2",
)


def test_same_seed_same_arrays_other_seed_other_arrays(small_root):
    for split in SPLITS:
        first, y_first = load(small_root, split, **EVERYTHING, degrade_seed=3)
        again, y_again = load(small_root, split, **EVERYTHING, degrade_seed=3)
        other, y_other = load(small_root, split, **EVERYTHING, degrade_seed=4)
        assert sorted(first) == ["audio", "visual", "visual2"]
        np.testing.assert_array_equal(y_first, y_again)
        for modality in first:
            np.testing.assert_array_equal(first[modality], again[modality])
            if split != "train":  # train's subset differs too, so its arrays differ in length
                assert not np.array_equal(first[modality], other[modality]), (split, modality)
    train = zoo.datasets.load("av_digits", small_root, "train", **EVERYTHING, degrade_seed=3)
    other = zoo.datasets.load("av_digits", small_root, "train", **EVERYTHING, degrade_seed=4)
    assert train.read_example.paths != other.read_example.paths


def test_per_example_reads_give_the_batched_arrays(small_root):
    options = dict(EVERYTHING, audio_noise="white")
    batched, labels = load(small_root, "validation", **options)
    single = zoo.datasets.load("av_digits", small_root, "validation", cache=False, **options)
    for index in (0, 7, 29):
        example = single.read_example(index)
        assert sorted(example) == sorted(batched)
        for modality, value in example.items():
            np.testing.assert_array_equal(value, batched[modality][index])
    x, y = single.to_numpy()
    np.testing.assert_array_equal(y, labels)


def test_each_split_draws_its_own_noise(small_root):
    options = dict(audio_snr_db=0.0, audio_noise="white", visual_occlusion=0.3)
    validation = zoo.datasets.load("av_digits", small_root, "validation", **options)
    test = zoo.datasets.load("av_digits", small_root, "test", **options)
    noise_v = validation.read_example.speech.mixture()["noise"]
    noise_t = test.read_example.speech.mixture()["noise"]
    assert noise_v.shape == noise_t.shape and not np.allclose(noise_v, noise_t)


# --------------------------------------------------------------------------- images
def test_blur_is_a_gaussian_filter_of_the_image_and_changes_nothing_else(small_root):
    from scipy import ndimage

    clean, labels = load(small_root)
    previous = 0.0
    for sigma in (1.0, 2.5):
        x, y = load(small_root, visual_blur=sigma)
        np.testing.assert_array_equal(y, labels)
        np.testing.assert_array_equal(x["audio"], clean["audio"])
        expected = ndimage.gaussian_filter(
            clean["visual"], sigma=(0, sigma, sigma, 0), mode="constant"
        )
        np.testing.assert_allclose(x["visual"], expected, rtol=0, atol=1e-6)
        change = np.abs(x["visual"] - clean["visual"]).mean()
        assert change > previous  # graded: a larger sigma moves the images further
        previous = change


def test_occlusion_zeroes_one_square_per_image_and_nothing_else(small_root):
    clean, labels = load(small_root, "validation")
    for fraction in (0.3, 0.7):
        x, y = load(small_root, "validation", visual_occlusion=fraction, degrade_seed=1)
        np.testing.assert_array_equal(y, labels)
        np.testing.assert_array_equal(x["audio"], clean["audio"])
        side = regimes.occlusion_side(fraction)
        assert abs(side**2 / 28**2 - fraction) < 0.04
        candidates = []
        for image, original in zip(x["visual"][..., 0], clean["visual"][..., 0], strict=True):
            changed = np.argwhere(image != original)
            assert (image[original == 0] == 0).all()
            # the square: find it from the zero region that covers every changed pixel
            found = [
                (r, c)
                for r in range(29 - side)
                for c in range(29 - side)
                if not image[r : r + side, c : c + side].any()
                and all(r <= i < r + side and c <= j < c + side for i, j in changed)
            ]
            assert found, "the changed pixels are not inside one zero square"
            r, c = found[0]
            outside = np.ones_like(image, bool)
            outside[r : r + side, c : c + side] = False
            np.testing.assert_array_equal(image[outside], original[outside])
            candidates.append(set(found))
        assert not set.intersection(*candidates)  # no common square: drawn per example


def test_occlusion_corners_are_uniform_inside_the_image():
    images = np.ones((2000, 28, 28, 1), np.float32)
    out, corners = regimes.degrade_images(images, 0, 0.5, 0, np.random.default_rng(0))
    side = regimes.occlusion_side(0.5)
    assert side == 20 and corners.min() == 0 and corners.max() == 28 - side
    np.testing.assert_array_equal((out == 0).sum(axis=(1, 2, 3)), side * side)


def test_pixel_noise_is_clipped_and_graded(small_root):
    clean, _ = load(small_root)
    low, _ = load(small_root, visual_noise=0.1)
    high, _ = load(small_root, visual_noise=0.4)
    for x in (low, high):
        assert x["visual"].min() >= 0 and x["visual"].max() <= 1
        np.testing.assert_array_equal(x["audio"], clean["audio"])
    assert 0 < np.abs(low["visual"] - clean["visual"]).mean()
    assert (
        np.abs(low["visual"] - clean["visual"]).mean()
        < np.abs(high["visual"] - clean["visual"]).mean()
    )


# --------------------------------------------------------------------------- small train set
def test_train_fraction_is_a_stratified_subset_of_train_only(small_root):
    full = zoo.datasets.load("av_digits", small_root, "train")
    small = zoo.datasets.load("av_digits", small_root, "train", train_fraction=0.5)
    assert np.bincount(full.labels).tolist() == [6] * 10
    assert np.bincount(small.labels).tolist() == [3] * 10
    kept = [full.read_example.paths.index(p) for p in small.read_example.paths]
    assert kept == sorted(kept)  # a subset, in file order
    x_full, _ = full.to_numpy()
    x_small, _ = small.to_numpy()
    for modality in ("audio", "visual"):  # each kept example keeps its audio and its image
        np.testing.assert_array_equal(x_small[modality], x_full[modality][kept])
    tiny = zoo.datasets.load("av_digits", small_root, "train", train_fraction=0.01)
    assert np.bincount(tiny.labels).tolist() == [1] * 10  # at least one per class
    for split in ("validation", "test"):
        expected, labels = load(small_root, split)
        x, y = load(small_root, split, train_fraction=0.2, degrade_seed=5)
        np.testing.assert_array_equal(y, labels)
        for modality in expected:
            np.testing.assert_array_equal(x[modality], expected[modality])


@real
@pytest.mark.parametrize("split_by, per_digit", [("take", 240), ("speaker", 200)])
def test_real_train_fraction_keeps_every_digit_in_proportion(split_by, per_digit):
    full = zoo.datasets.load("av_digits", FSDD_ROOT, "train", split_by=split_by)
    assert np.bincount(full.labels).tolist() == [per_digit] * 10
    small = zoo.datasets.load(
        "av_digits", FSDD_ROOT, "train", split_by=split_by, train_fraction=0.15
    )
    assert np.bincount(small.labels).tolist() == [int(per_digit * 0.15 + 0.5)] * 10
    speakers = {os.path.basename(p).split("_")[1] for p in small.read_example.paths}
    assert len(speakers) == (6 if split_by == "take" else 4)
    validation = zoo.datasets.load(
        "av_digits", FSDD_ROOT, "validation", split_by=split_by, train_fraction=0.15
    )
    assert validation.num_examples == (300 if split_by == "take" else 500)


# --------------------------------------------------------------------------- third modality
def test_visual2_is_another_degraded_image_of_the_same_digit(small_root):
    for split in SPLITS:
        dataset = zoo.datasets.load("av_digits", small_root, split, third_modality="visual2")
        assert dataset.input_shapes["visual2"] == (28, 28, 1)
        x, y = dataset.to_numpy()
        plain, _ = load(small_root, split)
        for modality in ("audio", "visual"):
            np.testing.assert_array_equal(x[modality], plain[modality])
        side = regimes.occlusion_side(regimes.VISUAL2_DEFAULTS["visual2_occlusion"])
        assert ((x["visual2"] == 0).sum(axis=(1, 2, 3)) >= side * side).all()
    images, image_labels = av_digits.image_split("validation")
    labels = np.repeat(np.arange(10), 40)
    pairs = av_digits.pair_images(labels, image_labels, 0)
    second = regimes.second_pairs(pairs, image_labels, np.random.default_rng(0))
    assert (second != pairs).all()  # never the same handwritten image
    np.testing.assert_array_equal(image_labels[second], labels)  # always the same digit
    assert len(np.unique(second)) > 0.6 * len(image_labels)  # drawn from the whole pool
    clear = dict(visual2_blur=0, visual2_occlusion=0, visual2_noise=0)
    x, _ = load(small_root, "test", third_modality="visual2", **clear)
    assert not np.array_equal(x["visual2"], x["visual"])
    assert {float(v) for v in np.unique(x["visual2"])} <= {i / 16 for i in range(17)}


@pytest.mark.parametrize("name", ["late_fusion_av3_cnn", "early_fusion_av3_cnn"])
def test_three_modality_models_build_from_the_data_and_train_one_step(small_root, name):
    import keras_msam

    train = zoo.datasets.load(
        "av_digits", small_root, "train", third_modality="visual2", batch_size=16
    )
    parameters = zoo.models.defaults(name)  # as the experiment runner builds models
    shapes = {
        f"{m}_shape": shape for m, shape in train.input_shapes.items() if f"{m}_shape" in parameters
    }
    assert sorted(shapes) == ["audio_shape", "visual2_shape", "visual_shape"]
    model = zoo.models.create(name, num_classes=10, width=8, **shapes)
    assert model.modality_names == ("audio", "visual", "visual2")
    assert model.fusion_kind == ("late" if name.startswith("late") else "early")
    variables = model.modality_variables()
    assert sorted(variables) == ["audio", "visual", "visual2"]
    ids = [id(v) for group in variables.values() for v in group]
    ids += [id(v) for v in model.shared_variables()]
    assert sorted(ids) == sorted(id(v) for v in model.trainable_variables)  # each exactly once
    x, y = train[0]
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(model.fuse(model.encode(x))),
        keras.ops.convert_to_numpy(model(x, training=False)),
        atol=1e-5,
    )
    trainer = keras_msam.MSAM(model)
    trainer.compile(
        optimizer=keras.optimizers.SGD(0.05),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    before = [np.array(keras.ops.convert_to_numpy(v)) for v in model.trainable_variables]
    logs = trainer.train_on_batch(x, y, return_dict=True)
    assert np.isfinite(logs["loss"])
    shares = [logs[f"shapley_{m}"] for m in ("audio", "visual", "visual2")]
    assert np.isfinite(shares).all()
    after = [np.array(keras.ops.convert_to_numpy(v)) for v in model.trainable_variables]
    assert any(not np.array_equal(a, b) for a, b in zip(before, after, strict=True))
    # the two-modality data does not fit a three-modality model
    with pytest.raises(ValueError, match="visual2"):
        model({"audio": x["audio"], "visual": x["visual"]})


def test_three_modality_model_keeps_the_two_modality_architecture_per_encoder():
    two = zoo.models.create("late_fusion_av_cnn")
    three = zoo.models.create("late_fusion_av3_cnn")
    per_encoder = (two.count_params() - two.fusion.count_params()) // 2
    assert three.count_params() == 3 * per_encoder + 3 * 64 * 10 + 10
    assert zoo.models.describe("early_fusion_av3_cnn")["inputs"] == {
        "audio": (40, 40, 1),
        "visual": (28, 28, 1),
        "visual2": (28, 28, 1),
    }


# --------------------------------------------------------------------------- bad values
@pytest.mark.parametrize(
    "option, value, expected",
    [
        ("audio_noise", "pink", r"audio_noise must be one of \('white', 'babble'\)"),
        ("audio_snr_db", "loud", "audio_snr_db must be a finite number"),
        ("audio_snr_db", float("nan"), "audio_snr_db must be a finite number"),
        ("audio_snr_db", True, "audio_snr_db must be a finite number"),
        ("babble_talkers", 0, "babble_talkers must be an integer from 1 to 9"),
        ("babble_talkers", 2.5, "babble_talkers must be an integer from 1 to 9"),
        ("visual_blur", -0.5, "visual_blur must be a Gaussian sigma in pixels >= 0"),
        ("visual_occlusion", 1.5, r"visual_occlusion must be a fraction .* in \[0, 1\]"),
        ("visual_noise", -0.1, "visual_noise must be a pixel noise standard deviation >= 0"),
        ("train_fraction", 0, r"train_fraction must be a fraction in \(0, 1\]"),
        ("train_fraction", 1.5, r"train_fraction must be a fraction in \(0, 1\]"),
        ("train_fraction", "half", r"train_fraction must be a fraction in \(0, 1\]"),
        ("third_modality", "video", r"third_modality must be None or one of \('visual2',\)"),
        ("visual2_occlusion", -1, "visual2_occlusion must be a fraction"),
        ("visual2_blur", float("inf"), "visual2_blur must be a Gaussian sigma"),
        ("degrade_seed", -1, "degrade_seed must be an integer >= 0"),
        ("degrade_seed", 1.5, "degrade_seed must be an integer >= 0"),
    ],
)
def test_bad_values_raise_an_error_naming_the_option(small_root, option, value, expected):
    for split in ("train", "test"):
        with pytest.raises(ValueError, match=expected):
            zoo.datasets.load("av_digits", small_root, split, **{option: value})


def test_unknown_option_is_still_refused(small_root):
    with pytest.raises(TypeError, match="audio_snr"):
        zoo.datasets.load("av_digits", small_root, "test", audio_snr=5)


def test_check_takes_the_regime_options_and_avmnist_layout_refuses_them(small_root, tmp_path):
    report = zoo.datasets.check("av_digits", small_root, deep=False, audio_snr_db=0.0)
    assert report.ok, report.format()
    with pytest.raises(ValueError, match="visual_blur"):
        zoo.datasets.check("av_digits", small_root, deep=False, visual_blur=-1)
    with pytest.raises(ValueError, match="takes no regime option"):
        av_digits.write_avmnist_layout(small_root, str(tmp_path), visual_blur=1.0)
