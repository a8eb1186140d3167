"""File decoding and feature helpers; optional packages are imported lazily, here only."""

from __future__ import annotations

import importlib
import os
import pickle
from typing import Any

import numpy as np

from zoo.datasets.errors import DataFormatError, MissingDependencyError

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)

_PACKAGE_OF_MODULE = {"PIL": "pillow", "sklearn": "scikit-learn"}


def require(module: str, extra: str = "audio", purpose: str = "this loader") -> Any:
    """Imports an optional module, or raises an error that names the extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        package = _PACKAGE_OF_MODULE.get(module, module)
        raise MissingDependencyError(
            f"{purpose} needs the optional package '{package}', which is not installed. "
            f"Install it with: pip install keras-msam[{extra}]"
        ) from error


def read_wav(path: str, sample_rate: int | None = None, mono: bool = True) -> np.ndarray:
    """Reads a wav file as float32 in [-1, 1], resampled to ``sample_rate`` when given.

    Raises:
        DataFormatError: naming the file when it is missing, truncated or not audio.
    """
    soundfile = require("soundfile", purpose="Reading wav files")
    try:
        samples, rate = soundfile.read(path, dtype="float32", always_2d=True)
    except Exception as error:  # soundfile raises LibsndfileError/RuntimeError variants
        raise DataFormatError(path, f"unreadable audio file ({error})") from error
    if samples.shape[0] == 0:
        raise DataFormatError(path, "audio file has no samples (truncated?)")
    samples = samples.mean(axis=1) if mono else samples.T
    if sample_rate is not None and rate != sample_rate:
        librosa = require("librosa", purpose="Resampling audio")
        samples = librosa.resample(samples, orig_sr=rate, target_sr=sample_rate)
    return np.asarray(samples, np.float32)


def read_image(path: str, size: int | tuple[int, int] | None = None) -> np.ndarray:
    """Reads an image file as float32 RGB in [0, 1], shape (H, W, 3), resized when asked.

    Raises:
        DataFormatError: naming the file when it is missing or not a decodable image.
    """
    image_module = require("PIL.Image", purpose="Reading jpg frames")
    try:
        with image_module.open(path) as image:
            image = image.convert("RGB")
            if size is not None:
                height, width = (size, size) if isinstance(size, int) else size
                image = image.resize((width, height), image_module.BILINEAR)
            pixels = np.asarray(image, np.float32)
    except Exception as error:  # PIL raises UnidentifiedImageError, OSError (truncated), ...
        raise DataFormatError(path, f"unreadable image file ({error})") from error
    return pixels / 255.0


def imagenet_normalize(pixels: np.ndarray) -> np.ndarray:
    """Applies the ImageNet mean/std normalisation to RGB pixels in [0, 1] (channels last)."""
    return (pixels - IMAGENET_MEAN) / IMAGENET_STD


def read_pickle(path: str) -> Any:
    """Unpickles a file (only for data sets from sources you trust), naming it on failure."""
    try:
        with open(path, "rb") as handle:
            return pickle.load(handle, encoding="latin1")
    except FileNotFoundError as error:
        raise DataFormatError(path, "file is missing") from error
    except Exception as error:
        raise DataFormatError(path, f"unreadable pickle ({error})") from error


def load_npy(path: str, mmap: bool = False) -> np.ndarray:
    """Loads a .npy array, naming the file when it is missing or not a numpy array file."""
    if not os.path.isfile(path):
        raise DataFormatError(path, "file is missing")
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except Exception as error:
        raise DataFormatError(path, f"unreadable .npy file ({error})") from error


def expect_shape(path: str, array: np.ndarray, expected: tuple[int | None, ...], what: str) -> None:
    """Raises a `DataFormatError` when ``array`` does not have ``expected`` (None = any) shape."""
    shape = tuple(array.shape)
    if len(shape) != len(expected) or any(
        e is not None and e != s for e, s in zip(expected, shape, strict=False)
    ):
        wanted = "(" + ", ".join("N" if e is None else str(e) for e in expected) + ")"
        raise DataFormatError(path, f"{what} has shape {shape}, expected {wanted}")


def expect_numeric(path: str, array: np.ndarray, what: str, integer: bool = False) -> None:
    """Raises a `DataFormatError` when ``array``'s dtype is not numeric (or not integer)."""
    kind = array.dtype.kind
    allowed = "iu" if integer else "iuf"
    if integer and kind == "f" and array.size and np.all(np.mod(array, 1) == 0):
        return  # labels stored as whole floats are accepted
    if kind not in allowed:
        wanted = "integer" if integer else "numeric"
        raise DataFormatError(path, f"{what} has dtype {array.dtype}, expected {wanted}")


def tile_to_length(samples: np.ndarray, length: int) -> np.ndarray:
    """Repeats a waveform until it has ``length`` samples, then cuts it there."""
    repeats = -(-length // max(len(samples), 1))
    return np.tile(samples, max(repeats, 1))[:length]


def fit_to_length(samples: np.ndarray, length: int) -> np.ndarray:
    """Zero-pads (at the end) or cuts a waveform to exactly ``length`` samples."""
    if len(samples) >= length:
        return samples[:length]
    return np.pad(samples, (0, length - len(samples)))


def log_mel(
    samples: np.ndarray,
    sample_rate: int,
    num_mels: int,
    num_frames: int,
    n_fft: int,
    hop_length: int,
) -> np.ndarray:
    """Log-mel spectrogram (num_mels, num_frames), float32, log(mel power + 1e-6)."""
    librosa = require("librosa", purpose="Computing log-mel features")
    mel = librosa.feature.melspectrogram(
        y=samples, sr=sample_rate, n_fft=n_fft, hop_length=hop_length, n_mels=num_mels, center=True
    )
    mel = np.log(mel + 1e-6).astype(np.float32)
    if mel.shape[1] < num_frames:
        mel = np.pad(mel, ((0, 0), (0, num_frames - mel.shape[1])), constant_values=np.log(1e-6))
    return mel[:, :num_frames]


def split_indices(
    count: int, fraction: float, seed: int, groups: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Deterministically splits ``range(count)`` into (kept, held_out), seeded.

    ``round(fraction * count)`` indices are held out. With ``groups`` (e.g. labels) the held-out
    part is stratified: each index gets its (shuffled) relative position inside its group, and
    the smallest positions are held out, so every group is represented in proportion.
    """
    rng = np.random.default_rng(seed)
    groups = np.zeros(count, np.int64) if groups is None else np.asarray(groups)
    position = np.empty(count, np.float64)
    for group in np.unique(groups):
        members = np.flatnonzero(groups == group)
        ranks = rng.permutation(len(members))
        position[members] = (ranks + rng.uniform(0, 1, len(members))) / len(members)
    held = np.sort(np.argsort(position, kind="stable")[: int(round(fraction * count))])
    kept = np.setdiff1d(np.arange(count), held)
    return kept, held
