"""CREMA-D in the OGM-GE layout (wav audio read on the fly, 1-fps jpg frames)."""

from __future__ import annotations

import os

import numpy as np

from zoo.datasets._common import Problems, check_splits
from zoo.datasets._frames import frames_shape, list_frames, pick_frames, read_frames
from zoo.datasets._io import read_wav, require, split_indices, tile_to_length
from zoo.datasets.errors import CheckReport
from zoo.datasets.pipeline import FileDataset

CLASS_NAMES = ("NEU", "HAP", "SAD", "FEA", "DIS", "ANG")
SAMPLE_RATE = 22050
DURATION_S = 3
N_FFT = 512
HOP_LENGTH = 353
SPECTROGRAM_SHAPE = (N_FFT // 2 + 1, 1 + (SAMPLE_RATE * DURATION_S) // HOP_LENGTH)  # (257, 188)
AUDIO_FEATURES = ("ogm_ge", "waveform")


def read_split_csv(path: str, problems: Problems) -> list[tuple[str, int]]:
    """Reads ``clip,EMO`` rows (no header, optional UTF-8 BOM) as (clip, class index)."""
    rows = []
    try:
        with open(path, encoding="utf-8-sig") as handle:
            lines = handle.read().splitlines()
    except FileNotFoundError:
        problems(path, "split file is missing")
        return rows
    except (OSError, UnicodeDecodeError) as error:
        problems(path, f"unreadable split file ({error})")
        return rows
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        fields = [f.strip() for f in line.split(",")]
        if len(fields) != 2:
            problems(path, f"line {number}: expected 'clip,EMO', got {line!r}")
            continue
        clip, emotion = fields
        if emotion not in CLASS_NAMES:
            problems(
                path, f"line {number}: unknown label {emotion!r} (known: {', '.join(CLASS_NAMES)})"
            )
            continue
        rows.append((clip, CLASS_NAMES.index(emotion)))
    if not rows and not lines:
        problems(path, "split file is empty")
    return rows


def ogm_ge_spectrogram(samples: np.ndarray) -> np.ndarray:
    """OGM-GE's audio processing of one clip sampled at 22,050 Hz: (257, 188) log |STFT|."""
    librosa = require("librosa", purpose="The CREMA-D loader")
    samples = np.clip(tile_to_length(samples, SAMPLE_RATE * DURATION_S), -1.0, 1.0)
    spectrogram = librosa.stft(samples, n_fft=N_FFT, hop_length=HOP_LENGTH)
    return np.log(np.abs(spectrogram) + 1e-7).astype(np.float32)


class CremaDReader:
    """Decodes example ``i``: its wav into the chosen audio features, its frames into an array."""

    def __init__(self, root, clips, frames_dir, num_frames, image_size, layout, selection, audio):
        self.root, self.clips, self.frames_dir = root, clips, frames_dir
        self.num_frames, self.image_size = num_frames, image_size
        self.layout, self.selection, self.audio = layout, selection, audio

    def __call__(self, index: int) -> dict[str, np.ndarray]:
        clip = self.clips[index]
        samples = read_wav(os.path.join(self.root, "AudioWAV", f"{clip}.wav"), SAMPLE_RATE)
        if self.audio == "ogm_ge":
            audio = ogm_ge_spectrogram(samples)[..., None]
        else:
            audio = np.clip(tile_to_length(samples, SAMPLE_RATE * DURATION_S), -1.0, 1.0)
        folder = os.path.join(self.root, self.frames_dir, clip)
        paths = pick_frames(list_frames(folder), self.num_frames, self.selection, folder)
        visual = read_frames(paths, self.image_size, self.layout, normalize=True)
        return {"audio": audio, "visual": visual}


def _build(
    root: str,
    split: str,
    problems: Problems,
    num_frames: int = 1,
    image_size: int = 224,
    frames_dir: str = "Image-01-FPS",
    frames_layout: str = "time",
    frame_selection: str = "first",
    audio_features: str = "ogm_ge",
    validation_fraction: float = 0.1,
    split_seed: int = 0,
    on_error: str = "raise",
    cache: bool = False,
    **batch_kwargs,
) -> FileDataset | None:
    if frame_selection == "agm" and num_frames != 1:
        raise ValueError(f"frame_selection='agm' picks one frame, got num_frames={num_frames}.")
    if audio_features not in AUDIO_FEATURES:
        raise ValueError(f"audio_features must be one of {AUDIO_FEATURES}, got {audio_features!r}")
    csv = os.path.join(root, "test.csv" if split == "test" else "train.csv")
    rows = read_split_csv(csv, problems)
    if split != "test" and validation_fraction > 0:
        labels = np.array([label for _, label in rows], np.int64)
        train, held = split_indices(len(rows), validation_fraction, split_seed, labels)
        rows = [rows[i] for i in (held if split == "validation" else train)]
    elif split == "validation":
        raise ValueError("CREMA-D has no validation file: set validation_fraction > 0.")
    kept = []
    for clip, label in rows:
        wav = os.path.join(root, "AudioWAV", f"{clip}.wav")
        folder = os.path.join(root, frames_dir, clip)
        if not os.path.isfile(wav):
            problems(
                wav, f"audio file of clip {clip!r} (listed in {os.path.basename(csv)}) is missing"
            )
        elif not os.path.isdir(folder):
            problems(folder, f"frame folder of clip {clip!r} is missing")
        else:
            kept.append((clip, label))
    if not kept:
        if rows or problems.report is None:
            problems(csv, f"the {split} split has no clip with all its files")
        return None
    audio_shape = (
        (*SPECTROGRAM_SHAPE, 1) if audio_features == "ogm_ge" else (SAMPLE_RATE * DURATION_S,)
    )
    reader = CremaDReader(
        root,
        [clip for clip, _ in kept],
        frames_dir,
        num_frames,
        image_size,
        frames_layout,
        frame_selection,
        audio_features,
    )
    return FileDataset(
        reader,
        np.array([label for _, label in kept], np.int32),
        {"audio": audio_shape, "visual": frames_shape(num_frames, image_size, frames_layout)},
        on_error=on_error,
        cache=cache,
        num_classes=len(CLASS_NAMES),
        class_names=CLASS_NAMES,
        split=split,
        **batch_kwargs,
    )


def load(root: str, split: str, **options) -> FileDataset:
    """CREMA-D, OGM-GE format (``GeWu-Lab/OGM-GE_CVPR2022``, ``dataset/CramedDataset.py``).

    Of the three CREMA-D formats in circulation this reads the OGM-GE one (raw wav + 1-fps jpg
    frames), not the BalanceMM/MMPareto ``audio/<clip>.pt`` fbank tensors nor PMR's
    ``<clip>.pkl`` 257x1004 spectrograms. Layout under ``root``::

        train.csv, test.csv           rows "clip,EMO", no header (OGM-GE ships 6698 / 744 rows)
        AudioWAV/<clip>.wav           the raw CREMA-D audio
        Image-01-FPS/<clip>/*.jpg     frames at 1 fps from video_preprocessing.py (00000.jpg ...)

    Labels: NEU, HAP, SAD, FEA, DIS, ANG -> 0..5 (OGM-GE's ``stat.csv`` order).

    Audio (``audio_features="ogm_ge"``, the default), as OGM-GE: load at 22,050 Hz, tile to 3 s
    (66,150 samples), clip to [-1, 1], STFT n_fft 512 hop 353 (librosa, centred), log(|S| + 1e-7)
    -> "audio" (257, 188, 1). OGM-GE tiles exactly 3 times; that is the same for every clip of
    1 s or more (all of CREMA-D), and shorter clips are tiled until 3 s. With
    ``audio_features="waveform"`` "audio" is the tiled, clipped 66,150-sample waveform, for an
    in-model ``keras.layers.STFTSpectrogram``/``MelSpectrogram``.

    Visual: ``num_frames`` (default 1, OGM-GE's ``--fps``) frames of the clip's folder, in sorted
    file order (``frame_selection="first"``; OGM-GE reads the first in ``os.listdir`` order,
    which the file system decides), evenly spread (``"uniform"``) or AGM's seeded choice of one
    frame (``"agm"``), each resized to ``image_size`` (224) and ImageNet-normalised -> "visual"
    (num_frames, 224, 224, 3), or (224, 224, 3 * num_frames) with ``frames_layout="channels"``.
    No random crop or flip is applied (put augmentation in the model).

    Splits: "test" is ``test.csv``. OGM-GE has no validation split and selects on test; here
    "validation" is a stratified ``validation_fraction`` (0.1) of ``train.csv`` drawn with
    ``split_seed``, and "train" the rest. Set ``validation_fraction=0`` for all of ``train.csv``.
    """
    return _build(root, split, Problems(), **options)


def check(root: str, report: CheckReport, deep: bool = True, **options) -> None:
    """Checks split files, labels, each clip's wav and frame folder; (deep) decodes them."""

    def build(root: str, split: str, problems: Problems):
        return _build(root, split, problems, validation_fraction=0.0, **options)

    check_splits(root, report, build, splits=("train", "test"), deep=deep)
