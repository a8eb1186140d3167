"""The embedded default data set: a synthetic audio-visual digit task with a tunable imbalance.

Generated in process (no files), deterministic by seed. Ten classes; each example has

* ``audio`` (40, 40, 1): a spectrogram-like image with one horizontal "tone" band whose frequency
  row encodes ``label // 2`` clearly, and whose on/off modulation over time encodes ``label % 2``
  weakly (``audio_parity_strength``). Audio is therefore easy to learn but cannot separate the two
  classes that share a tone: it dominates training and then stalls.
* ``visual`` (28, 28, 1): a fixed random blob prototype per class scaled by ``visual_strength``
  under Gaussian noise. It separates all ten classes but is slower to learn.

A model that learns both modalities beats either alone; a model dominated by audio stalls near
audio's ceiling. Lower ``visual_strength`` (or raise ``audio_parity_strength``) to sharpen the
imbalance.
"""

from __future__ import annotations

import numpy as np

NUM_CLASSES = 10
AUDIO_SHAPE = (40, 40, 1)
VISUAL_SHAPE = (28, 28, 1)
_PROTOTYPE_SEED = 20251029  # prototypes are fixed: the task is the same for every sample seed


def _visual_prototypes() -> np.ndarray:
    rng = np.random.default_rng(_PROTOTYPE_SEED)
    rows, cols = np.mgrid[0:28, 0:28].astype(np.float32)
    prototypes = np.zeros((NUM_CLASSES, 28, 28), np.float32)
    for label in range(NUM_CLASSES):
        for _ in range(3):
            r, c = rng.uniform(5, 23, size=2)
            sigma = rng.uniform(2.0, 4.0)
            prototypes[label] += np.exp(-((rows - r) ** 2 + (cols - c) ** 2) / (2 * sigma**2))
        prototypes[label] /= prototypes[label].max()
    return prototypes


def _make_split(
    count: int,
    rng: np.random.Generator,
    audio_parity_strength: float,
    visual_strength: float,
    noise: float,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    labels = rng.integers(0, NUM_CLASSES, size=count).astype(np.int32)

    audio = noise * rng.standard_normal((count, 40, 40)).astype(np.float32)
    tone_rows = 4 + 7 * (labels // 2)  # five tones, 7 bins apart
    time = np.arange(40)
    onsets = rng.integers(0, 8, size=count)
    for i in range(count):
        envelope = np.where(time >= onsets[i], 1.0, 0.0)
        if labels[i] % 2:  # odd classes: the tone is amplitude-modulated with period 4
            envelope = envelope * (1.0 - audio_parity_strength * ((time // 2) % 2))
        for offset in (-1, 0, 1):
            audio[i, tone_rows[i] + offset] += envelope * (1.0 if offset == 0 else 0.5)

    shifts = rng.integers(-2, 3, size=(count, 2))
    prototypes = _visual_prototypes()
    visual = noise * rng.standard_normal((count, 28, 28)).astype(np.float32)
    for i in range(count):
        shifted = np.roll(prototypes[labels[i]], tuple(shifts[i]), axis=(0, 1))
        visual[i] += visual_strength * shifted

    x = {"audio": audio[..., None], "visual": visual[..., None]}
    return x, labels


def generate(
    num_train: int = 2048,
    num_validation: int = 512,
    num_test: int = 1024,
    seed: int = 0,
    audio_parity_strength: float = 0.15,
    visual_strength: float = 0.6,
    noise: float = 0.5,
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
    for name, value in (("num_train", num_train), ("num_validation", num_validation),
                        ("num_test", num_test)):
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
