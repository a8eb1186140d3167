"""Kinetics-Sounds against BalanceBenchmark's ``KineticsSoundsDataset`` and AVE against PMR's
``AVEDataset``, both in evaluation mode (fixture ``ks_ave_reference.json`` from the clips in
``fixtures/kinetics_sounds/`` and ``fixtures/ave/``; provenance in ``tests/fixtures/README.md``).

The audio arrays (a (1024, 128) fbank, a (257, 1004) spectrogram) follow a formula the fixture
script and these tests share; the frames are stored jpgs. Tolerances: frames 1e-5 absolute on
400 entries and 1e-6 relative on sums. Pinned differences: PMR reads AVE frames in
``os.listdir`` order (matched here by file name) and numbers classes by first appearance in
testSet.txt (ours: sorted category names; equal through ``class_names``); BalanceBenchmark drops
Kinetics-Sounds clips whose folder holds 3 files or fewer (ours reads every clip that has the
frames it needs). Runs on the backend of KERAS_BACKEND (the loaders are numpy)."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

import zoo.datasets

pytestmark = pytest.mark.backend_agnostic  # numpy only: run on one backend

pytest.importorskip("PIL")

HERE = Path(__file__).parent / "fixtures"
FIXTURE = json.loads((HERE / "ks_ave_reference.json").read_text())
INDICES = np.array(FIXTURE["image_indices"])


def _audio_array(shape: tuple[int, int], offset: int) -> np.ndarray:
    """The fixture script's formula: a ramp with a per-clip offset."""
    ramp = np.arange(int(np.prod(shape)), dtype=np.float64).reshape(shape) % 977 / 977.0
    return (ramp - 0.5 + offset).astype(np.float32)


def _kinetics_root(tmp_path: Path) -> Path:
    root = tmp_path / "ks"
    shutil.copytree(HERE / "kinetics_sounds", root)
    (root / "audio").mkdir()
    for line in (root / "my_test.txt").read_text().splitlines():
        name, label = line.split()
        np.save(
            root / "audio" / f"{name}.npy", _audio_array((1024, 128), len(name) % 7 + int(label))
        )
    return root


def test_kinetics_sounds_equals_balancebenchmark(tmp_path):
    root = _kinetics_root(tmp_path)
    dataset = zoo.datasets.load("kinetics_sounds", root, "test")
    x, y = dataset.to_numpy()
    reference = FIXTURE["kinetics_sounds"]
    assert list(dataset.read_example.names) == reference["kept"]
    for i, name in enumerate(dataset.read_example.names):
        want = reference["examples"][name]
        assert int(y[i]) == want["label"]
        visual = x["visual"][i].transpose(3, 0, 1, 2)  # (C, T, H, W) as the reference
        assert list(visual.shape) == want["visual_shape"] == [3, 3, 224, 224]
        np.testing.assert_allclose(visual.reshape(-1)[INDICES], want["visual_values"], atol=1e-5)
        assert visual.astype(np.float64).sum() == pytest.approx(want["visual_sum"], rel=1e-6)
        audio = x["audio"][i][..., 0]
        assert want["audio_shape"] == [1, 1024, 128] and audio.shape == (1024, 128)
        assert audio.astype(np.float64).sum() == pytest.approx(want["audio_sum"], rel=1e-6)


def test_kinetics_sounds_uniform_frames_are_our_option_not_the_reference(tmp_path):
    root = _kinetics_root(tmp_path)
    x, _ = zoo.datasets.load("kinetics_sounds", root, "test", frame_selection="uniform").to_numpy()
    want = FIXTURE["kinetics_sounds"]["examples"]["clipA_000010_000020"]  # 10 frames
    assert x["visual"][0].astype(np.float64).sum() != pytest.approx(want["visual_sum"], rel=1e-6)


def test_a_bad_frame_selection_is_named(tmp_path):
    with pytest.raises(ValueError, match="frame_selection must be one of"):
        zoo.datasets.load("kinetics_sounds", _kinetics_root(tmp_path), "test", frame_selection="x")


def _ave_root(tmp_path: Path) -> Path:
    root = tmp_path / "ave"
    shutil.copytree(HERE / "ave", root)
    (root / "Audio-1004-SE").mkdir()
    for folder in (root / "Image-01-FPS-SE").iterdir():
        spectrogram = _audio_array((257, 1004), int(folder.name[-1]))
        with open(root / "Audio-1004-SE" / f"{folder.name}.pkl", "wb") as handle:
            pickle.dump(spectrogram, handle)
    return root


@pytest.mark.parametrize("split", ["train", "validation", "test"])
def test_ave_equals_pmr(tmp_path, split):
    root = _ave_root(tmp_path)
    dataset = zoo.datasets.load("ave", root, split)
    x, y = dataset.to_numpy()
    reference = FIXTURE["ave"]["splits"][split]
    videos = list(dataset.read_example.videos)
    assert videos == [e["video"] for e in reference]  # a repeated row is read once
    for i, want in enumerate(reference):
        assert dataset.class_names[int(y[i])] == want["category"]
        audio = x["audio"][i][..., 0].astype(np.float64)
        assert audio.sum() == pytest.approx(want["audio_sum"], rel=1e-6)
        if split == "train":  # PMR's train mode crops and flips at random: lists and labels only
            continue
        frames = sorted(want["frame_files"])
        for k, name in enumerate(want["frame_files"]):  # PMR's listdir order, by file name
            ours = x["visual"][i, frames.index(name)].transpose(2, 0, 1).reshape(-1)
            np.testing.assert_allclose(
                ours[INDICES % ours.size], want["frame_values"][k], atol=1e-5
            )
            assert ours.astype(np.float64).sum() == pytest.approx(want["frame_sums"][k], rel=1e-6)


def test_ave_labels_differ_from_pmr_only_in_numbering(tmp_path):
    dataset = zoo.datasets.load("ave", _ave_root(tmp_path), "test")
    pmr_classes = FIXTURE["ave"]["classes_by_first_appearance_in_testSet"]
    assert pmr_classes == ["Dog", "Church bell"]
    assert list(dataset.class_names) == sorted(pmr_classes)
    _, y = dataset.to_numpy()
    pmr = [e["label"] for e in FIXTURE["ave"]["splits"]["test"]]
    assert [pmr_classes[label] for label in pmr] == [dataset.class_names[int(v)] for v in y]
    assert pmr != [int(v) for v in y]
