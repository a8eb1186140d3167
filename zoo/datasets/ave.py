"""AVE (Audio-Visual Event): annotation files and the PMR/ReconBoost processed features."""

from __future__ import annotations

import os

import numpy as np

from zoo.datasets._common import Problems, check_splits
from zoo.datasets._frames import frames_shape, list_frames, pick_frames, read_frames
from zoo.datasets._io import expect_numeric, expect_shape, read_pickle
from zoo.datasets.errors import CheckReport
from zoo.datasets.pipeline import FileDataset

NUM_CLASSES = 28
SPECTROGRAM_SHAPE = (257, 1004)
SPLIT_FILES = {"train": "trainSet.txt", "validation": "valSet.txt", "test": "testSet.txt"}


def read_rows(path: str, problems: Problems) -> list[tuple[str, str]]:
    """Reads ``Category&VideoID&Quality&StartTime&EndTime`` rows as (category, video id)."""
    rows = []
    try:
        with open(path, encoding="utf-8-sig") as handle:
            lines = handle.read().splitlines()
    except FileNotFoundError:
        problems(path, "file is missing")
        return rows
    for number, line in enumerate(lines, start=1):
        if not line.strip() or line.startswith("Category&"):
            continue  # the header of Annotations.txt
        fields = line.split("&")
        if len(fields) != 5:
            problems(path, f"line {number}: expected 'Category&VideoID&Quality&Start&End'")
            continue
        rows.append((fields[0].strip(), fields[1].strip()))
    return rows


def class_names(root: str, problems: Problems) -> list[str]:
    """The categories of ``Annotations.txt``, sorted by name (index = label)."""
    return sorted(
        {category for category, _ in read_rows(os.path.join(root, "Annotations.txt"), problems)}
    )


class AVEReader:
    def __init__(self, root, videos, audio_dir, frames_dir, num_frames, image_size, layout):
        self.root, self.videos = root, videos
        self.audio_dir, self.frames_dir = audio_dir, frames_dir
        self.num_frames, self.image_size, self.layout = num_frames, image_size, layout

    def __call__(self, index: int) -> dict[str, np.ndarray]:
        video = self.videos[index]
        path = os.path.join(self.root, self.audio_dir, f"{video}.pkl")
        spectrogram = np.asarray(read_pickle(path))
        expect_shape(path, spectrogram, SPECTROGRAM_SHAPE, "spectrogram")
        expect_numeric(path, spectrogram, "spectrogram")
        folder = os.path.join(self.root, self.frames_dir, video)
        paths = pick_frames(list_frames(folder), self.num_frames, "uniform", folder)
        visual = read_frames(paths, self.image_size, self.layout, normalize=True)
        return {"audio": spectrogram.astype(np.float32)[..., None], "visual": visual}


def _build(
    root: str,
    split: str,
    problems: Problems,
    audio_dir: str = "Audio-1004-SE",
    frames_dir: str = "Image-01-FPS-SE",
    num_frames: int = 3,
    image_size: int = 224,
    frames_layout: str = "time",
    on_error: str = "raise",
    cache: bool = False,
    **batch_kwargs,
) -> FileDataset | None:
    names = class_names(root, problems)
    path = os.path.join(root, SPLIT_FILES[split])
    rows = read_rows(path, problems)
    if not names:
        return None
    kept, seen = [], set()
    for category, video in rows:
        if video in seen:  # a repeated row of the same video: one example (PMR's loader)
            continue
        seen.add(video)
        if category not in names:
            problems(path, f"unknown label {category!r} for video {video} (not in Annotations.txt)")
            continue
        audio = os.path.join(root, audio_dir, f"{video}.pkl")
        folder = os.path.join(root, frames_dir, video)
        if not os.path.isfile(audio):
            problems(audio, f"spectrogram of video {video!r} is missing")
        elif not os.path.isdir(folder):
            problems(folder, f"frame folder of video {video!r} is missing")
        else:
            kept.append((video, names.index(category)))
    if not kept:
        if rows or problems.report is None:
            problems(path, f"the {split} split has no video with all its files")
        return None
    reader = AVEReader(
        root, [v for v, _ in kept], audio_dir, frames_dir, num_frames, image_size, frames_layout
    )
    return FileDataset(
        reader,
        np.array([label for _, label in kept], np.int32),
        {
            "audio": (*SPECTROGRAM_SHAPE, 1),
            "visual": frames_shape(num_frames, image_size, frames_layout),
        },
        on_error=on_error,
        cache=cache,
        num_classes=len(names),
        class_names=names,
        split=split,
        **batch_kwargs,
    )


def load(root: str, split: str, **options) -> FileDataset:
    """AVE, raw annotations plus the processed features of PMR / ReconBoost.

    Layout under ``root``::

        Annotations.txt                 header + rows "Category&VideoID&Quality&Start&End"
        trainSet.txt, valSet.txt, testSet.txt   the same row format, no header
        Audio-1004-SE/<VideoID>.pkl     pickled (257, 1004) z-scored spectrogram of the event
                                        (tiled to 10 s at 16 kHz; PMR video_preprocessing.py)
        Image-01-FPS-SE/<VideoID>/*.jpg frames within [start, end] at 1 fps

    Outputs "audio" (257, 1004, 1) as stored and "visual": ``num_frames`` (3) frames spread
    evenly over the sorted jpgs, resized to ``image_size`` (224), ImageNet-normalised,
    (3, 224, 224, 3) or (224, 224, 9) with ``frames_layout="channels"``. Each video of a split
    file is one example (a repeated row is read once, as PMR's loader does).

    Labels: the categories of ``Annotations.txt`` sorted by name -> 0..27 (``class_names`` on the
    returned data set). PMR/ReconBoost index classes by first appearance in ``testSet.txt``,
    which changes whenever that file does; remap with ``class_names`` to compare per-class
    numbers. The three split files give "train", "validation" and "test".
    """
    return _build(root, split, Problems(), **options)


def check(root: str, report: CheckReport, deep: bool = True, **options) -> None:
    """Checks the annotation and split files, each video's features, and (deep) decodes them."""

    def build(root: str, split: str, problems: Problems):
        return _build(root, split, problems, **options)

    check_splits(root, report, build, deep=deep)
