"""Kinetics-Sounds: 1024x128 fbank .npy audio and ``frame_0000{t}.jpg`` frames."""

from __future__ import annotations

import os

import numpy as np

from zoo.datasets._common import Problems, check_splits
from zoo.datasets._frames import (
    FRAME_SELECTIONS,
    frames_shape,
    list_frames,
    pick_frames,
    read_frames,
)
from zoo.datasets._io import expect_numeric, expect_shape, load_npy, split_indices
from zoo.datasets.errors import CheckReport, DataFormatError
from zoo.datasets.pipeline import FileDataset

NUM_CLASSES = 31
FBANK_SHAPE = (1024, 128)
SPLIT_FILES = {"train": ("my_train.txt", "train.txt"), "test": ("my_test.txt", "test.txt")}


def _find_split_file(root: str, split: str, problems: Problems) -> str | None:
    for name in SPLIT_FILES[split]:
        path = os.path.join(root, name)
        if os.path.isfile(path):
            return path
    names = " or ".join(SPLIT_FILES[split])
    problems(
        os.path.join(root, SPLIT_FILES[split][0]), f"split file is missing (looked for {names})"
    )
    return None


def read_split_file(path: str, problems: Problems) -> list[tuple[str, int]]:
    """Reads ``name,10,label`` (OGM-GE) or ``name ... label`` (BalanceMM) rows."""
    rows = []
    with open(path, encoding="utf-8-sig") as handle:
        lines = handle.read().splitlines()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        fields = line.split(",") if "," in line else line.split()
        if len(fields) < 2:
            problems(path, f"line {number}: expected 'name ... label', got {line!r}")
            continue
        name, label_text = fields[0].strip(), fields[-1].strip()
        try:
            label = int(label_text)
        except ValueError:
            problems(path, f"line {number}: label {label_text!r} is not an integer")
            continue
        if not 0 <= label < NUM_CLASSES:
            problems(path, f"line {number}: unknown label {label} (expected 0..{NUM_CLASSES - 1})")
            continue
        rows.append((name, label))
    return rows


class KineticsSoundsReader:
    def __init__(
        self, root, names, audio_dir, visual_dir, num_frames, image_size, layout, selection
    ):
        self.root, self.names, self.selection = root, names, selection
        self.audio_dir, self.visual_dir = audio_dir, visual_dir
        self.num_frames, self.image_size, self.layout = num_frames, image_size, layout

    def __call__(self, index: int) -> dict[str, np.ndarray]:
        name = self.names[index]
        path = os.path.join(self.root, self.audio_dir, f"{name}.npy")
        fbank = load_npy(path)
        expect_shape(path, fbank, FBANK_SHAPE, "fbank")
        expect_numeric(path, fbank, "fbank")
        folder = os.path.join(self.root, self.visual_dir, name)
        frames = [p for p in list_frames(folder) if os.path.basename(p).startswith("frame_")]
        if not frames:
            raise DataFormatError(folder, "holds no frame_0000{t}.jpg files")
        paths = pick_frames(frames, self.num_frames, self.selection, folder)
        visual = read_frames(paths, self.image_size, self.layout, normalize=True)
        return {"audio": fbank.astype(np.float32)[..., None], "visual": visual}


def _build(
    root: str,
    split: str,
    problems: Problems,
    audio_dir: str = "audio",
    visual_dir: str = "visual",
    num_frames: int = 3,
    image_size: int = 224,
    frames_layout: str = "time",
    frame_selection: str = "balancebenchmark",
    validation_fraction: float = 0.1,
    split_seed: int = 0,
    on_error: str = "raise",
    cache: bool = False,
    **batch_kwargs,
) -> FileDataset | None:
    if frame_selection not in FRAME_SELECTIONS:
        raise ValueError(
            f"frame_selection must be one of {FRAME_SELECTIONS}, got {frame_selection!r}."
        )
    path = _find_split_file(root, "test" if split == "test" else "train", problems)
    if path is None:
        return None
    rows = read_split_file(path, problems)
    if split != "test" and validation_fraction > 0:
        labels = np.array([label for _, label in rows], np.int64)
        train, held = split_indices(len(rows), validation_fraction, split_seed, labels)
        rows = [rows[i] for i in (held if split == "validation" else train)]
    elif split == "validation":
        raise ValueError("Kinetics-Sounds has no validation file: set validation_fraction > 0.")
    kept = []
    for name, label in rows:
        audio = os.path.join(root, audio_dir, f"{name}.npy")
        folder = os.path.join(root, visual_dir, name)
        if not os.path.isfile(audio):
            problems(audio, f"fbank of clip {name!r} is missing")
        elif not os.path.isdir(folder):
            problems(folder, f"frame folder of clip {name!r} is missing")
        else:
            kept.append((name, label))
    if not kept:
        if rows or problems.report is None:
            problems(path, f"the {split} split has no clip with all its files")
        return None
    reader = KineticsSoundsReader(
        root,
        [n for n, _ in kept],
        audio_dir,
        visual_dir,
        num_frames,
        image_size,
        frames_layout,
        frame_selection,
    )
    return FileDataset(
        reader,
        np.array([label for _, label in kept], np.int32),
        {"audio": (*FBANK_SHAPE, 1), "visual": frames_shape(num_frames, image_size, frames_layout)},
        on_error=on_error,
        cache=cache,
        num_classes=NUM_CLASSES,
        split=split,
        **batch_kwargs,
    )


def load(root: str, split: str, **options) -> FileDataset:
    """Kinetics-Sounds, OGM-GE/BalanceMM processed layout (31 classes).

    Layout under ``root`` (``audio_dir`` and ``visual_dir`` can be renamed)::

        my_train.txt | train.txt    split rows: OGM-GE "<ytid>_<start>_<end>,10,<label>" or
        my_test.txt  | test.txt     BalanceMM "<name> ... <label>" (name first, label last)
        audio/<name>.npy            Kaldi fbank from process_audio.py: (1024, 128) float,
                                    already normalised (x + 4.503877) / (2 * 5.141276)
        visual/<name>/frame_0000{t}.jpg   1-fps frames, t = 0..9

    Outputs "audio" (1024, 128, 1) as stored, and "visual": ``num_frames`` (3) of the sorted
    ``frame_*`` files, chosen as BalanceBenchmark's evaluation does
    (``frame_selection="balancebenchmark"``: frames i·s + max(s // 2, 1) with s = n // 3 when a
    clip has more than 6, else frame 1 three times; ``"uniform"`` spreads them evenly), resized
    to ``image_size`` and ImageNet-normalised,
    (3, 224, 224, 3) or (224, 224, 9) with ``frames_layout="channels"``. Labels are the integers
    in the split file (0..30). "validation" is a stratified ``validation_fraction`` (0.1) of the
    train file drawn with ``split_seed``; "train" is the rest; "test" is the test file.
    """
    return _build(root, split, Problems(), **options)


def check(root: str, report: CheckReport, deep: bool = True, **options) -> None:
    """Checks the split files, labels, every clip's fbank and frames, and (deep) decodes them."""

    def build(root: str, split: str, problems: Problems):
        return _build(root, split, problems, validation_fraction=0.0, **options)

    check_splits(root, report, build, splits=("train", "test"), deep=deep)
