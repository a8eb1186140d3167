"""Free Spoken Digit Dataset: a folder of ``{digit}_{speaker}_{take}.wav`` recordings."""

from __future__ import annotations

import os
import re

import numpy as np

from zoo.datasets._common import Problems, check_splits
from zoo.datasets._io import fit_to_length, log_mel, read_wav
from zoo.datasets.errors import CheckReport, DataFormatError
from zoo.datasets.pipeline import FileDataset

SAMPLE_RATE = 8000
NUM_CLASSES = 10
FILE_NAME = re.compile(r"^(?P<digit>\d+)_(?P<speaker>[A-Za-z0-9-]+)_(?P<take>\d+)\.wav$")
AUDIO_FEATURES = ("log_mel", "waveform")
SPLIT_BY = ("take", "speaker")


def recordings_dir(root: str) -> str:
    """``root/recordings`` when it exists (the FSDD repository layout), else ``root``."""
    nested = os.path.join(root, "recordings")
    return nested if os.path.isdir(nested) else root


def index_recordings(root: str, problems: Problems) -> list[tuple[str, int, str, int]]:
    """Lists (path, digit, speaker, take) of every recording, reporting misnamed wav files."""
    folder = recordings_dir(root)
    try:
        names = sorted(n for n in os.listdir(folder) if n.lower().endswith(".wav"))
    except FileNotFoundError:
        problems(folder, "recordings folder is missing")
        return []
    records = []
    for name in names:
        path = os.path.join(folder, name)
        match = FILE_NAME.match(name)
        if match is None:
            problems(path, "file name does not match '{digit}_{speaker}_{take}.wav'")
            continue
        digit = int(match["digit"])
        if not 0 <= digit < NUM_CLASSES:
            problems(path, f"unknown label {digit} (digits are 0..9)")
            continue
        records.append((path, digit, match["speaker"], int(match["take"])))
    if not records and not names:
        problems(folder, "no .wav recordings found")
    return records


def split_records(
    records: list[tuple[str, int, str, int]],
    split: str,
    split_by: str = "take",
    test_speakers: tuple[str, ...] = ("theo",),
    validation_speakers: tuple[str, ...] = ("nicolas",),
) -> list[tuple[str, int, str, int]]:
    """Selects a split's recordings.

    ``split_by="take"``: test = takes 0-4 (the FSDD authors' convention), validation = takes 5-9,
    train = the rest. ``split_by="speaker"`` (speaker-independent): test = ``test_speakers``,
    validation = ``validation_speakers``, train = every other speaker.
    """
    if split_by == "take":

        def which(record):
            take = record[3]
            return "test" if take < 5 else "validation" if take < 10 else "train"
    elif split_by == "speaker":
        overlap = set(test_speakers) & set(validation_speakers)
        if overlap:
            raise ValueError(f"Speakers {sorted(overlap)} are in both test and validation.")

        def which(record):
            speaker = record[2]
            if speaker in test_speakers:
                return "test"
            return "validation" if speaker in validation_speakers else "train"
    else:
        raise ValueError(f"split_by must be one of {SPLIT_BY}, got {split_by!r}.")
    return [r for r in records if which(r) == split]


class SpeechFeatures:
    """Turns a recording into fixed-shape features (thread-safe, picklable)."""

    def __init__(
        self,
        audio_features: str = "log_mel",
        duration: float = 1.0,
        num_mels: int = 40,
        num_frames: int = 40,
        n_fft: int = 256,
    ):
        if audio_features not in AUDIO_FEATURES:
            raise ValueError(
                f"audio_features must be one of {AUDIO_FEATURES}, got {audio_features!r}"
            )
        self.kind = audio_features
        self.length = int(round(duration * SAMPLE_RATE))
        self.num_mels, self.num_frames, self.n_fft = num_mels, num_frames, n_fft
        self.hop_length = max(1, -(-self.length // num_frames))

    @property
    def shape(self) -> tuple[int, ...]:
        if self.kind == "waveform":
            return (self.length,)
        return (self.num_mels, self.num_frames, 1)

    def __call__(self, path: str) -> np.ndarray:
        samples = fit_to_length(read_wav(path, SAMPLE_RATE), self.length)
        if self.kind == "waveform":
            return samples.astype(np.float32)
        mel = log_mel(
            samples, SAMPLE_RATE, self.num_mels, self.num_frames, self.n_fft, self.hop_length
        )
        mel = (mel - mel.mean()) / (mel.std() + 1e-6)  # per-clip z-score
        return mel[..., None].astype(np.float32)


class FSDDReader:
    def __init__(self, paths: list[str], features: SpeechFeatures):
        self.paths, self.features = paths, features

    def __call__(self, index: int) -> dict[str, np.ndarray]:
        return {"audio": self.features(self.paths[index])}


FEATURE_OPTIONS = ("audio_features", "duration", "num_mels", "num_frames", "n_fft")
SPLIT_OPTIONS = ("split_by", "test_speakers", "validation_speakers")


def _pop(options: dict, names: tuple[str, ...]) -> dict:
    return {k: options.pop(k) for k in names if k in options}


def _build(
    root: str,
    split: str,
    problems: Problems,
    on_error: str = "raise",
    cache: bool = True,
    **options,
) -> FileDataset | None:
    features = SpeechFeatures(**_pop(options, FEATURE_OPTIONS))
    split_options = _pop(options, SPLIT_OPTIONS)
    records = split_records(index_recordings(root, problems), split, **split_options)
    if not records:
        raise DataFormatError(recordings_dir(root), f"no recording falls in the {split} split")
    return FileDataset(
        FSDDReader([r[0] for r in records], features),
        np.array([r[1] for r in records], np.int32),
        {"audio": features.shape},
        on_error=on_error,
        cache=cache,
        num_classes=NUM_CLASSES,
        class_names=[str(d) for d in range(NUM_CLASSES)],
        split=split,
        **options,
    )


def load(root: str, split: str, **options) -> FileDataset:
    """Free Spoken Digit Dataset (Jakobovski/free-spoken-digit-dataset): real spoken digits.

    ``root`` is the repository folder (with ``recordings/``) or the folder of wavs itself; files
    are named ``{digit}_{speaker}_{take}.wav`` (mono 8 kHz). Label = digit (0..9).

    Audio, resampled to 8 kHz and zero-padded or cut to ``duration`` (1.0) s:
    ``audio_features="log_mel"`` (default) -> "audio" (num_mels, num_frames, 1) = (40, 40, 1),
    log(mel power + 1e-6), n_fft 256, hop ceil(8000 / num_frames), z-scored per clip;
    ``"waveform"`` -> "audio" (8000,) for an in-model ``keras.layers.MelSpectrogram``.

    Splits (see `split_records`): ``split_by="take"`` (default) puts takes 0-4 in test (the FSDD
    convention), 5-9 in validation, the rest in train; ``split_by="speaker"`` holds out
    ``test_speakers`` (theo) and ``validation_speakers`` (nicolas).

    Decoded features are kept in memory after their first read (``cache=True``, about 6 KB per
    recording), so only the first epoch decodes wavs.
    """
    return _build(root, split, Problems(), **options)


def check(root: str, report: CheckReport, deep: bool = True, **options) -> None:
    """Checks file names and labels, and (deep) decodes every recording."""

    def build(root: str, split: str, problems: Problems):
        return _build(root, split, problems, **options)

    check_splits(root, report, build, deep=deep)
