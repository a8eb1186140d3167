"""The CREMA-D loader against OGM-GE's ``CramedDataset`` and AGM's ``CreamdDataset`` in evaluation
mode (fixture ``cremad_reference.json`` computed from the three clips in ``fixtures/cremad/``;
provenance in ``tests/fixtures/README.md``).

Compared: the log-STFT spectrogram (400 entries and the sum of its first 112 columns; tolerance
1e-4 absolute / 1e-6 relative, the same librosa pipeline in float32) and the normalised frame
(400 entries and the sum; 1e-5 / 1e-6). Pinned differences: a clip shorter than 1 s is tiled to
3 s here (OGM-GE tiles it exactly 3 times, so its spectrogram is narrower; both agree on the
columns they share); OGM-GE reads the first frame in ``os.listdir`` order (its random frame
choice is computed and unused), an order the file system decides, where we read the first in
sorted order; AGM's seeded frame is ``frame_selection="agm"``; AGM's validation ("dep") split
takes the last 10 % of test.csv, ours never reads test.csv outside "test".
Runs on the backend of KERAS_BACKEND (the loader is numpy)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

import zoo.datasets

pytestmark = pytest.mark.backend_agnostic  # numpy only: run on one backend

pytest.importorskip("librosa")
pytest.importorskip("PIL")

HERE = Path(__file__).parent / "fixtures"
FIXTURE = json.loads((HERE / "cremad_reference.json").read_text())
ROOT = HERE / "cremad"
SPLIT_OF = {"1001_DFA_ANG_XX": "train", "1002_IEO_HAP_HI": "test", "1003_TIE_SAD_XX": "train"}


def _ours(frame_selection: str = "first") -> dict[str, tuple[np.ndarray, np.ndarray, int]]:
    """{clip: (spectrogram (257, T), frames as (3, 1, 224, 224), label)} from our loader."""
    out = {}
    for split in ("train", "test"):
        dataset = zoo.datasets.load(
            "cremad", ROOT, split, validation_fraction=0.0, frame_selection=frame_selection
        )
        x, y = dataset.to_numpy()
        for i, clip in enumerate(dataset.read_example.clips):
            out[clip] = (x["audio"][i, ..., 0], x["visual"][i].transpose(3, 0, 1, 2), int(y[i]))
    return out


def _assert_spectrogram(ours: np.ndarray, reference: dict) -> None:
    rows, cols = np.array(FIXTURE["spectrogram_indices"]).T
    np.testing.assert_allclose(ours[rows, cols], reference["spectrogram_values"], atol=1e-4)
    total = ours[:, :112].astype(np.float64).sum()
    assert total == pytest.approx(reference["spectrogram_first_112_sum"], rel=1e-6)


def _assert_image(ours: np.ndarray, reference: dict) -> None:
    assert list(ours.shape) == reference["images_shape"] == [3, 1, 224, 224]
    values = ours.reshape(-1)[np.array(FIXTURE["image_indices"])]
    np.testing.assert_allclose(values, reference["image_values"], atol=1e-5)
    assert ours.astype(np.float64).sum() == pytest.approx(reference["image_sum"], rel=1e-6)


def test_spectrograms_labels_and_single_frames_equal_ogm_ge():
    ours = _ours()
    assert set(ours) == set(FIXTURE["clips"])
    for clip, reference in FIXTURE["clips"].items():
        spectrogram, frames, label = ours[clip]
        assert label == reference["label"]
        _assert_spectrogram(spectrogram, reference["ogm_ge"])
        if len(os.listdir(ROOT / "Image-01-FPS" / clip)) == 1:  # no frame choice to make
            _assert_image(frames, reference["ogm_ge"])


def test_a_clip_under_one_second_is_tiled_to_three_seconds_where_ogm_ge_tiles_three_times():
    reference = FIXTURE["clips"]["1002_IEO_HAP_HI"]["ogm_ge"]  # 0.6 s at 22,050 Hz
    assert reference["spectrogram_shape"] == [257, 113]
    spectrogram, _, _ = _ours()["1002_IEO_HAP_HI"]
    assert spectrogram.shape == (257, 188)  # the shared columns agree (test above)


def test_frames_equal_agm_with_its_seeded_choice():
    ours = _ours("agm")
    for clip, reference in FIXTURE["clips"].items():
        spectrogram, frames, _ = ours[clip]
        _assert_spectrogram(spectrogram, reference["agm"])
        _assert_image(frames, reference["agm"])
    multi = FIXTURE["clips"]["1003_TIE_SAD_XX"]
    assert multi["agm_frame"] == "00001.jpg"  # not the first: the selection matters
    _, first, _ = _ours("first")["1003_TIE_SAD_XX"]
    _, seeded, _ = ours["1003_TIE_SAD_XX"]
    assert not np.allclose(first, seeded)


def test_agm_validation_reads_test_clips_ours_does_not(tmp_path):
    splits = FIXTURE["agm_splits"]
    train_csv, test_csv, lists = splits["train_csv"], splits["test_csv"], splits["lists"]
    assert lists["train"] == train_csv[:9] and lists["test"] == test_csv[:9]
    assert lists["dep"] == train_csv[9:] + test_csv[9:]  # a test clip used for selection
    for names, filename in ((train_csv, "train.csv"), (test_csv, "test.csv")):
        (tmp_path / filename).write_text("".join(f"{n},NEU\n" for n in names))
        for name in names:
            os.makedirs(tmp_path / "AudioWAV", exist_ok=True)
            (tmp_path / "AudioWAV" / f"{name}.wav").touch()
            os.makedirs(tmp_path / "Image-01-FPS" / name)
    clips = {
        split: zoo.datasets.load("cremad", tmp_path, split).read_example.clips
        for split in ("train", "validation", "test")
    }
    assert clips["test"] == test_csv
    assert sorted(clips["train"] + clips["validation"]) == sorted(train_csv)
    assert len(clips["validation"]) == 1 and not set(clips["validation"]) & set(test_csv)


def test_agm_frame_selection_takes_one_frame():
    with pytest.raises(ValueError, match="frame_selection='agm' picks one frame"):
        zoo.datasets.load("cremad", ROOT, "test", num_frames=2, frame_selection="agm")
