"""AV-MNIST in the MultiBench layout."""

from __future__ import annotations

import os

import numpy as np

from zoo.datasets._common import Problems, check_splits
from zoo.datasets._io import expect_numeric, load_npy
from zoo.datasets.errors import CheckReport, DataFormatError
from zoo.datasets.pipeline import ArrayDataset

NUM_CLASSES = 10
IMAGE_SIZE = 28
AUDIO_SIZE = 112


def _paths(root: str, part: str) -> dict[str, str]:
    return {
        "visual": os.path.join(root, "image", f"{part}_data.npy"),
        "audio": os.path.join(root, "audio", f"{part}_data.npy"),
        "labels": os.path.join(root, f"{part}_labels.npy"),
    }


def _read_part(root: str, part: str, problems: Problems) -> tuple[dict, np.ndarray] | None:
    paths = _paths(root, part)
    arrays = {}
    for key, path in paths.items():
        try:
            arrays[key] = load_npy(path, mmap=True)
        except DataFormatError as error:
            problems.catch(error)
    if len(arrays) < 3:
        return None
    image, audio, labels = arrays["visual"], arrays["audio"], arrays["labels"]
    ok = True
    if not (image.ndim == 2 and image.shape[1] == IMAGE_SIZE**2) and image.shape[1:] != (28, 28):
        problems(paths["visual"], f"image array has shape {image.shape}, expected (N, 784)")
        ok = False
    if audio.shape[1:] != (AUDIO_SIZE, AUDIO_SIZE):
        problems(paths["audio"], f"audio array has shape {audio.shape}, expected (N, 112, 112)")
        ok = False
    labels_flat = labels.reshape(-1) if labels.ndim == 2 and labels.shape[1] == 1 else labels
    if labels_flat.ndim != 1:
        problems(paths["labels"], f"labels have shape {labels.shape}, expected (N,)")
        ok = False
    for key in ("visual", "audio"):
        try:
            expect_numeric(paths[key], arrays[key], f"{key} array")
        except DataFormatError as error:
            problems.catch(error)
            ok = False
    try:
        expect_numeric(paths["labels"], labels_flat, "labels", integer=True)
    except DataFormatError as error:
        problems.catch(error)
        ok = False
    if not ok:
        return None
    counts = {k: len(a) for k, a in arrays.items()}
    if len(set(counts.values())) != 1:
        problems(
            os.path.join(root, f"{part}_labels.npy"),
            f"{part} arrays differ in length: image {counts['visual']}, audio {counts['audio']}, "
            f"labels {counts['labels']}",
        )
        return None
    labels_int = np.asarray(labels_flat).astype(np.int32)
    bad = np.flatnonzero((labels_int < 0) | (labels_int >= NUM_CLASSES))
    if bad.size:
        problems(
            paths["labels"],
            f"unknown label {labels_int[bad[0]]} at row {bad[0]} ({bad.size} rows outside 0..9)",
        )
        return None
    return {"visual": image, "audio": audio}, labels_int


def _build(
    root: str,
    split: str,
    problems: Problems,
    validation_size: int = 5000,
    normalize: bool = True,
    **batch_kwargs,
) -> ArrayDataset | None:
    part = "test" if split == "test" else "train"
    result = _read_part(root, part, problems)
    if result is None:
        return None
    inputs, labels = result
    if split != "test":
        count = len(labels)
        if not 0 <= validation_size < count:
            problems(
                _paths(root, "train")["labels"],
                f"validation_size={validation_size} must be smaller than the {count} train rows",
            )
            return None
        rows = (
            slice(count - validation_size, count)
            if split == "validation"
            else slice(0, count - validation_size)
        )
        inputs = {m: a[rows] for m, a in inputs.items()}
        labels = labels[rows]
    scale = (1.0 / 255.0) if normalize else 1.0

    def visual(batch: np.ndarray) -> np.ndarray:
        return batch.reshape(len(batch), IMAGE_SIZE, IMAGE_SIZE, 1).astype(np.float32) * scale

    def audio(batch: np.ndarray) -> np.ndarray:
        return batch.reshape(len(batch), AUDIO_SIZE, AUDIO_SIZE, 1).astype(np.float32) * scale

    return ArrayDataset(
        inputs,
        labels,
        transforms={"visual": visual, "audio": audio},
        num_classes=NUM_CLASSES,
        class_names=[str(d) for d in range(NUM_CLASSES)],
        split=split,
        **batch_kwargs,
    )


def load(root: str, split: str, *, on_error: str = "raise", **options) -> ArrayDataset:
    """AV-MNIST, MultiBench layout (``pliang279/MultiBench`` ``datasets/avmnist/get_data.py``).

    Reads, under ``root``::

        image/train_data.npy   (60000, 784) float 0-255   -> "visual" (28, 28, 1)
        audio/train_data.npy   (60000, 112, 112) 0-255    -> "audio"  (112, 112, 1)
        train_labels.npy       (60000,) digits 0-9
        image/test_data.npy, audio/test_data.npy, test_labels.npy   (10000 rows each)

    Both modalities are divided by 255 (``normalize=True``) and given a trailing channel axis
    (channels last; MultiBench is channels first). Splits follow MultiBench: "validation" is the
    last ``validation_size`` (5000) rows of the train files, "train" the rows before them, "test"
    the test files. Arrays are memory-mapped, so a split is not read into memory until batched.
    MultiBench's ``image`` is called ``visual`` here, like every audio-visual loader of the zoo.
    """
    del on_error  # arrays in memory: nothing is decoded per batch
    dataset = _build(root, split, Problems(), **options)
    assert dataset is not None  # Problems() raises instead of returning None
    return dataset


def check(root: str, report: CheckReport, deep: bool = True, validation_size: int = 5000) -> None:
    """Checks the six .npy files: presence, shapes, dtypes, lengths and labels."""

    def build(root: str, split: str, problems: Problems):
        return _build(root, split, problems, validation_size=validation_size)

    check_splits(root, report, build, splits=("train", "test"), deep=deep)
