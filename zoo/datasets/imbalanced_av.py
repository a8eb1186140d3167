"""The embedded default data set: a synthetic audio-visual task with a tunable imbalance.

Generated in process (no files), deterministic by seed. Ten classes; class information is in
local, position-free textures, so convolutional encoders with global pooling can learn it:

* ``audio`` (40, 40, 1): a spectrogram-like harmonic stack, horizontal lines every
  ``3 + label // 2`` frequency bins (five pitches, random phase), which encodes ``label // 2``
  clearly. Odd classes are amplitude-modulated over time (period 4 frames) with depth
  ``audio_parity_strength``, a weak cue. Audio is therefore learnt fast but cannot separate the
  two classes that share a pitch: it dominates training and stalls near 50-60% accuracy.
* ``visual`` (28, 28, 1): a sinusoidal grating whose orientation is ``label · 18°`` (random
  phase), with amplitude ``visual_strength`` under Gaussian noise. It separates all ten classes
  but is learnt more slowly.

A model that learns both modalities beats either alone; a model dominated by audio stalls near
audio's ceiling. Lower ``visual_strength`` (or raise ``audio_parity_strength``) to sharpen the
imbalance.
"""

from __future__ import annotations

from typing import Any

import numpy as np

NUM_CLASSES = 10
AUDIO_SHAPE = (40, 40, 1)
VISUAL_SHAPE = (28, 28, 1)


def _make_split(
    count: int,
    rng: np.random.Generator,
    audio_parity_strength: float,
    visual_strength: float,
    noise: float,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    labels = rng.integers(0, NUM_CLASSES, size=count).astype(np.int32)

    freq = np.arange(40, dtype=np.float32)[None, :, None]
    time = np.arange(40, dtype=np.float32)[None, None, :]
    period = (3 + labels // 2).astype(np.float32)[:, None, None]
    phase = rng.integers(0, 8, size=count).astype(np.float32)[:, None, None]
    harmonics = (np.mod(freq + phase, period) < 1.0).astype(np.float32)
    modulation = 1.0 - audio_parity_strength * (np.mod(time // 2, 2) == 1)
    odd = (labels % 2 == 1)[:, None, None]
    envelope = np.where(odd, modulation, 1.0).astype(np.float32)
    audio = harmonics * envelope + noise * rng.standard_normal((count, 40, 40))

    rows, cols = np.mgrid[0:28, 0:28].astype(np.float32)
    angle = (labels * np.pi / NUM_CLASSES)[:, None, None]
    visual_phase = rng.uniform(0, 2 * np.pi, size=count)[:, None, None]
    wave = np.cos(2 * np.pi / 6.0 * (rows * np.sin(angle) + cols * np.cos(angle)) + visual_phase)
    visual = visual_strength * wave + noise * rng.standard_normal((count, 28, 28))

    x = {
        "audio": audio.astype(np.float32)[..., None],
        "visual": visual.astype(np.float32)[..., None],
    }
    return x, labels


def generate(
    num_train: int = 2048,
    num_validation: int = 512,
    num_test: int = 1024,
    seed: int = 0,
    audio_parity_strength: float = 0.15,
    visual_strength: float = 0.5,
    noise: float = 1.0,
) -> dict[str, tuple[dict[str, np.ndarray], np.ndarray]]:
    """Generates the train/validation/test splits as ``{split: ({modality: array}, labels)}``.

    Args:
        num_train: Examples in the training split.
        num_validation: Examples in the validation split.
        num_test: Examples in the test split.
        seed: Seed of the sampling; the same seed gives the same arrays.
        audio_parity_strength: Depth (0..1) of the modulation that tells odd from even classes in
            audio. Small values keep audio's unimodal accuracy near 50-60%.
        visual_strength: Amplitude of the visual class prototype relative to unit noise scale.
        noise: Standard deviation of the Gaussian noise added to both modalities.

    Returns:
        A dict with keys ``"train"``, ``"validation"``, ``"test"``; inputs are float32 arrays of
        shape (N, 40, 40, 1) for ``audio`` and (N, 28, 28, 1) for ``visual``; labels are int32.
    """
    for name, value in (
        ("num_train", num_train),
        ("num_validation", num_validation),
        ("num_test", num_test),
    ):
        if int(value) < 1:
            raise ValueError(f"{name} must be a positive number of examples, got {value!r}.")
    if not 0.0 <= audio_parity_strength <= 1.0:
        raise ValueError(
            f"audio_parity_strength must lie in [0, 1], got {audio_parity_strength!r}."
        )
    if noise < 0:
        raise ValueError(f"noise must be >= 0, got {noise!r}.")
    rng = np.random.default_rng(seed)
    sizes = {"train": num_train, "validation": num_validation, "test": num_test}
    return {
        split: _make_split(int(n), rng, audio_parity_strength, visual_strength, noise)
        for split, n in sizes.items()
    }


_CACHE: dict[tuple, dict[str, tuple[dict[str, np.ndarray], np.ndarray]]] = {}
_BATCH_OPTIONS = (
    "batch_size",
    "shuffle",
    "seed",
    "drop_remainder",
    "modalities",
    "workers",
    "use_multiprocessing",
)


def load(root: None, split: str, *, data_seed: int = 0, on_error: str = "raise", **options):
    """Embedded synthetic audio-visual task (no files; the CLI's default data set).

    Generated in process by `generate` (see the module docstring) with ``seed=data_seed``: the
    same seed gives the same arrays. Options of `generate` (``num_train``, ``num_validation``,
    ``num_test``, ``audio_parity_strength``, ``visual_strength``, ``noise``) pass through with
    its defaults. Outputs "audio" (40, 40, 1) and "visual" (28, 28, 1) float32, int32 labels
    0..9. Audio is learnt fast but only separates the five label pairs; visual separates all
    ten classes but is learnt more slowly. ``root`` is ignored.
    """
    del root, on_error
    batch_kwargs = {k: options.pop(k) for k in _BATCH_OPTIONS if k in options}
    key = (data_seed, tuple(sorted(options.items())))
    return split_dataset(
        _CACHE, key, lambda: generate(seed=data_seed, **options), split, batch_kwargs
    )


def split_dataset(cache: dict, key: Any, make: Any, split: str, batch_kwargs: dict) -> Any:
    """The `ArrayDataset` of ``split`` from ``cache[key]``, the splits ``make()`` returns (built
    on a miss; one key is kept, so a new seed or option set replaces the arrays)."""
    from zoo.datasets.pipeline import ArrayDataset

    if key not in cache:
        cache.clear()
        cache[key] = make()
    inputs, labels = cache[key][split]
    return ArrayDataset(
        inputs,
        labels,
        num_classes=NUM_CLASSES,
        class_names=[str(c) for c in range(NUM_CLASSES)],
        split=split,
        **batch_kwargs,
    )
