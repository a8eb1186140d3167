"""Reading a clip's frame folder into a fixed (T, H, W, 3) block."""

from __future__ import annotations

import os

import numpy as np

from zoo.datasets._io import imagenet_normalize, read_image
from zoo.datasets.errors import DataFormatError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
FRAME_LAYOUTS = ("time", "channels")
FRAME_SELECTIONS = ("first", "uniform", "agm", "balancebenchmark")


def list_frames(folder: str) -> list[str]:
    """Sorted image files of a frame folder; raises `DataFormatError` if missing or empty."""
    try:
        names = sorted(n for n in os.listdir(folder) if n.lower().endswith(IMAGE_SUFFIXES))
    except FileNotFoundError as error:
        raise DataFormatError(folder, "frame folder is missing") from error
    except NotADirectoryError as error:
        raise DataFormatError(folder, "expected a folder of frames, found a file") from error
    if not names:
        raise DataFormatError(folder, "frame folder holds no .jpg files")
    return [os.path.join(folder, n) for n in names]


def pick_frames(paths: list[str], num_frames: int, selection: str, folder: str) -> list[str]:
    """Picks ``num_frames`` frames: the first ones ("first"), segment middles ("uniform"),
    BalanceBenchmark's Kinetics-Sounds evaluation frames ("balancebenchmark"), or
    AGM's CREMA-D choice ("agm": one frame, ``np.random.seed(999); choice(len(frames), 1,
    replace=False)`` over the sorted frames, lihong2303/AGM ``dataloader/CREMAD_loader.py``)."""
    if len(paths) < num_frames:
        raise DataFormatError(folder, f"has {len(paths)} frames, the loader needs {num_frames}")
    if selection == "first":
        return paths[:num_frames]
    if selection == "agm":
        if num_frames != 1:
            raise ValueError(f"frame_selection='agm' picks one frame, got num_frames={num_frames}.")
        return [paths[int(np.random.RandomState(999).choice(len(paths), 1, replace=False)[0])]]
    if selection == "balancebenchmark":
        # BalanceBenchmark KS_dataset.py (evaluation): t_i = i·seg + max(seg // 2, 1), seg =
        # n // k, when n > 2k frames, else frame 1 for every pick (its code: k = 3, n > 6)
        count = len(paths)
        seg = count // num_frames
        if count > 2 * num_frames:
            return [paths[i * seg + max(seg // 2, 1)] for i in range(num_frames)]
        return [paths[min(1, count - 1)]] * num_frames
    if selection == "uniform":
        edges = np.linspace(0, len(paths), num_frames + 1)
        return [paths[int((edges[i] + edges[i + 1]) / 2)] for i in range(num_frames)]
    raise ValueError(f"frame_selection must be one of {FRAME_SELECTIONS}, got {selection!r}.")


def read_frames(paths: list[str], image_size: int, layout: str, normalize: bool) -> np.ndarray:
    """Decodes frames to (T, H, W, 3) ("time") or (H, W, 3T) ("channels"), float32."""
    frames = np.stack([read_image(p, image_size) for p in paths])
    if normalize:
        frames = imagenet_normalize(frames)
    if layout == "channels":
        frames = np.concatenate(list(frames), axis=-1)
    return frames.astype(np.float32)


def frames_shape(num_frames: int, image_size: int, layout: str) -> tuple[int, ...]:
    if layout not in FRAME_LAYOUTS:
        raise ValueError(f"frames_layout must be one of {FRAME_LAYOUTS}, got {layout!r}.")
    if layout == "channels":
        return (image_size, image_size, 3 * num_frames)
    return (num_frames, image_size, image_size, 3)
