"""Imbalance regimes of AV-Digits: degraded speech or images, a small train set, a third input.

The options of `zoo.datasets.av_digits.load` that move which modality dominates, and by how
much, on the real FSDD recordings and scikit-learn's handwritten digits (issue #12, point 3):

- ``audio_snr_db`` / ``audio_noise`` / ``babble_talkers``: the recordings mixed with noise at a
  signal-to-noise ratio, on the waveforms, before the features (`degrade_audio`);
- ``visual_blur`` / ``visual_occlusion`` / ``visual_noise``: the 28x28 images degraded
  (`degrade_images`);
- ``train_fraction``: a stratified subset of the train split (`stratified_subset`);
- ``third_modality="visual2"``: a second, heavily degraded handwritten image of the digit
  (`second_pairs`; its own ``visual2_*`` degradation);
- ``degrade_seed``: the one seed of all of them.

Every option defaults to "off" (`Regime()`), which leaves the data set exactly as it was.
Every random draw comes from ``numpy.random.default_rng([degrade_seed, split, stream])``: the
same options and seed give the same arrays, and each split has its own draws.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any

import numpy as np

from zoo.datasets import fsdd
from zoo.datasets._io import read_wav, require
from zoo.datasets.errors import DataFormatError

AUDIO_NOISES = ("white", "babble")
THIRD_MODALITIES = ("visual2",)
IMAGE_SIDE = 28  # the images are (28, 28, 1) (see av_digits.upscale)
SPLIT_CODES = {"train": 0, "validation": 1, "test": 2}
# independent random streams, one per use
SUBSET_STREAM, AUDIO_STREAM, VISUAL_STREAM, PAIR2_STREAM, VISUAL2_STREAM = 1, 2, 3, 4, 5
# visual2's default degradation: alone it is moderately informative (see av_digits.load)
VISUAL2_DEFAULTS = {"visual2_blur": 0.0, "visual2_occlusion": 0.5, "visual2_noise": 0.0}


def _number(
    name: str,
    value: Any,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    expected: str = "",
) -> float:
    """``value`` as a float, or a ValueError naming the option and the range expected."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        ok = False
    else:
        ok = True
        if low is not None:
            ok = value > low if low_open else value >= low
        if high is not None:
            ok = ok and value <= high
    if not ok:
        raise ValueError(f"{name} must be {expected}, got {value!r}.")
    return float(value)


@dataclasses.dataclass(frozen=True)
class Regime:
    """The regime options of one AV-Digits load, checked (see `zoo.datasets.av_digits.load`).

    Raises:
        ValueError: naming the option and what it expects, for any value out of range.
    """

    audio_snr_db: float | None = None
    audio_noise: str = "babble"
    babble_talkers: int = 3
    visual_blur: float = 0.0
    visual_occlusion: float = 0.0
    visual_noise: float = 0.0
    train_fraction: float = 1.0
    third_modality: str | None = None
    visual2_blur: float = VISUAL2_DEFAULTS["visual2_blur"]
    visual2_occlusion: float = VISUAL2_DEFAULTS["visual2_occlusion"]
    visual2_noise: float = VISUAL2_DEFAULTS["visual2_noise"]
    degrade_seed: int = 0

    def __post_init__(self) -> None:
        if self.audio_snr_db is not None:
            _number("audio_snr_db", self.audio_snr_db, expected="a finite number (dB) or None")
        if self.audio_noise not in AUDIO_NOISES:
            raise ValueError(
                f"audio_noise must be one of {AUDIO_NOISES}, got {self.audio_noise!r}."
            )
        talkers = self.babble_talkers
        if isinstance(talkers, bool) or not isinstance(talkers, numbers.Integral):
            talkers = None
        if talkers is None or not 1 <= talkers <= 9:
            raise ValueError(
                f"babble_talkers must be an integer from 1 to 9 (other digits mixed in), got "
                f"{self.babble_talkers!r}."
            )
        for prefix in ("visual", "visual2"):
            _number(
                f"{prefix}_blur",
                getattr(self, f"{prefix}_blur"),
                0.0,
                expected="a Gaussian sigma in pixels >= 0 (0 = off)",
            )
            _number(
                f"{prefix}_occlusion",
                getattr(self, f"{prefix}_occlusion"),
                0.0,
                1.0,
                expected="a fraction of the image area in [0, 1] (0 = off)",
            )
            _number(
                f"{prefix}_noise",
                getattr(self, f"{prefix}_noise"),
                0.0,
                expected="a pixel noise standard deviation >= 0 (0 = off)",
            )
        _number(
            "train_fraction",
            self.train_fraction,
            0.0,
            1.0,
            low_open=True,
            expected="a fraction in (0, 1] (1 = the whole train split)",
        )
        if self.third_modality is not None and self.third_modality not in THIRD_MODALITIES:
            raise ValueError(
                f"third_modality must be None or one of {THIRD_MODALITIES}, got "
                f"{self.third_modality!r}."
            )
        seed = self.degrade_seed
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
            raise ValueError(f"degrade_seed must be an integer >= 0, got {seed!r}.")

    @classmethod
    def pop(cls, options: dict) -> Regime:
        """Takes the regime options out of a loader's ``options`` and checks them."""
        names = [field.name for field in dataclasses.fields(cls)]
        return cls(**{name: options.pop(name) for name in names if name in options})

    @property
    def audio_degraded(self) -> bool:
        return self.audio_snr_db is not None

    @property
    def visual_degraded(self) -> bool:
        return bool(self.visual_blur or self.visual_occlusion or self.visual_noise)

    def rng(self, split: str, stream: int) -> np.random.Generator:
        """The random stream ``stream`` of ``split`` (independent of every other)."""
        return np.random.default_rng([int(self.degrade_seed), SPLIT_CODES.get(split, 3), stream])


# --------------------------------------------------------------------------- small train set
def stratified_subset(labels: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of a seeded subset with ``floor(fraction * n_c + 0.5)`` (at least 1) of
    each class's ``n_c`` examples; ``fraction=1`` keeps every index."""
    labels = np.asarray(labels)
    if fraction >= 1.0:
        return np.arange(len(labels))
    keep = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        count = max(1, int(math.floor(fraction * len(members) + 0.5)))
        keep.append(members[rng.permutation(len(members))[:count]])
    return np.sort(np.concatenate(keep)) if keep else np.arange(0)


# --------------------------------------------------------------------------- audio
def read_waveforms(
    paths: list[str], length: int
) -> tuple[np.ndarray, np.ndarray, dict[int, DataFormatError]]:
    """Each recording's samples in [-1, 1], cut or zero-padded to ``length``.

    Returns ``(waves (N, length) float32, counts (N,), errors)``: ``counts[i]`` is the number of
    the clip's own (active) samples before the padding, and ``errors`` maps the index of each
    unreadable file to its `DataFormatError` (its row is zeros, its count 0). The values are
    those of ``SpeechFeatures("waveform")`` (int16 / 32768).
    """
    waves = np.zeros((len(paths), length), np.float32)
    counts = np.zeros(len(paths), np.int64)
    errors: dict[int, DataFormatError] = {}
    scale = np.float32(1 / 32768)
    for index, path in enumerate(paths):
        samples = fsdd.read_pcm16(path)
        if samples is not None:
            samples = samples.astype(np.float32) * scale
        else:
            try:
                samples = read_wav(path, fsdd.SAMPLE_RATE)
            except DataFormatError as error:
                errors[index] = error
                continue
        count = min(len(samples), length)
        waves[index, :count] = samples[:count]
        counts[index] = count
    return waves, counts, errors


def white_noise(counts: np.ndarray, length: int, rng: np.random.Generator) -> np.ndarray:
    """Standard Gaussian noise over each clip's active samples (zeros after them)."""
    noise = rng.standard_normal((len(counts), length), dtype=np.float32)
    noise[np.arange(length)[None, :] >= np.asarray(counts)[:, None]] = 0
    return noise


def babble_noise(
    waves: np.ndarray,
    counts: np.ndarray,
    labels: np.ndarray,
    talkers: int,
    rng: np.random.Generator,
    usable: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The sum of ``talkers`` other recordings of the split under each clip's active samples.

    For clip i the interferers are ``talkers`` recordings of distinct digits, all different
    from ``labels[i]`` (digits and recordings drawn with ``rng``; fewer when the split has fewer
    other digits). Each interferer's active samples are scaled to unit RMS (so each talker is
    as loud as the others) and repeated to cover the clip's active samples.

    Returns:
        ``(noise (N, length) float32, sources (N, talkers) int64)``: the unscaled babble (zeros
        after each clip's active samples) and the indices of its recordings (-1: none).
    """
    counts = np.asarray(counts)
    labels = np.asarray(labels)
    usable = (counts > 0) if usable is None else (np.asarray(usable) & (counts > 0))
    pools = {int(d): np.flatnonzero(usable & (labels == d)) for d in np.unique(labels)}
    pools = {d: pool for d, pool in pools.items() if pool.size}
    if len(pools) < 2:
        raise ValueError(
            "audio_noise='babble' mixes recordings of other digits of the same split, but this "
            f"split has readable recordings of {len(pools)} digit(s) only; use audio_noise="
            "'white'."
        )
    rms = np.sqrt(np.square(waves, dtype=np.float64).sum(axis=1) / np.maximum(counts, 1)).astype(
        np.float32
    )
    noise = np.zeros_like(waves)
    sources = np.full((len(labels), talkers), -1, np.int64)
    for index in range(len(labels)):
        count = int(counts[index])
        others = [d for d in pools if d != labels[index]]
        digits = rng.choice(others, size=min(talkers, len(others)), replace=False)
        for slot, digit in enumerate(digits):
            pool = pools[int(digit)]
            source = int(pool[rng.integers(len(pool))])
            sources[index, slot] = source
            if count == 0 or rms[source] == 0:
                continue
            segment = waves[source, : counts[source]] / rms[source]
            noise[index, :count] += np.resize(segment, count)
    return noise, sources


def mix_at_snr(
    clean: np.ndarray, noise: np.ndarray, counts: np.ndarray, snr_db: float
) -> tuple[np.ndarray, np.ndarray]:
    """``clean + g * noise`` with g per clip so that the SNR over its active samples is
    ``snr_db``: ``10 log10(sum(clean[:n]^2) / sum((g noise)[:n]^2)) = snr_db``.

    Both arrays must be zero past each clip's ``counts`` (as `read_waveforms` and the noise
    functions give them). A silent clip or silent noise gets no noise (g = 0).

    Returns:
        ``(mixed, scaled_noise)``, float32; ``mixed - clean == scaled_noise`` up to float32
        rounding. The mixture is not clipped (so the SNR holds exactly); it may exceed [-1, 1].
    """
    counts = np.maximum(np.asarray(counts), 1)
    signal = np.square(clean, dtype=np.float64).sum(axis=1) / counts
    power = np.square(noise, dtype=np.float64).sum(axis=1) / counts
    with np.errstate(divide="ignore", invalid="ignore"):
        gain = np.sqrt(signal / (power * 10.0 ** (float(snr_db) / 10.0)))
    gain = np.where((signal > 0) & (power > 0), gain, 0.0)
    scaled = (noise * gain[:, None]).astype(np.float32)
    return (clean + scaled).astype(np.float32), scaled


def degrade_audio(
    waves: np.ndarray,
    counts: np.ndarray,
    labels: np.ndarray,
    regime: Regime,
    split: str,
    usable: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The split's clean waveforms mixed with ``regime.audio_noise`` at ``regime.audio_snr_db``.

    Returns ``(mixed, scaled_noise)`` (see `mix_at_snr`).
    """
    rng = regime.rng(split, AUDIO_STREAM)
    if regime.audio_noise == "white":
        noise = white_noise(counts, waves.shape[1], rng)
    else:
        noise, _ = babble_noise(waves, counts, labels, regime.babble_talkers, rng, usable)
    return mix_at_snr(waves, noise, counts, regime.audio_snr_db)


class DegradedSpeechReader(fsdd.FSDDReader):
    """An `fsdd.FSDDReader` whose features are those of the noisy mixtures.

    Always bulk (the mixtures of a clip depend on other clips of the split): the first read
    decodes the split, mixes it (`degrade_audio`) and computes the features with the
    vectorised path (``SpeechFeatures.log_mel_many``), kept in memory. The disk feature cache is
    never used, so clean and noisy features never share a cache file (the whole split takes
    about 0.6 s for FSDD's 2400 training recordings).
    """

    def __init__(
        self,
        paths: list[str],
        features: fsdd.SpeechFeatures,
        labels: np.ndarray,
        regime: Regime,
        split: str,
    ):
        super().__init__(paths, features, bulk=True, cache_dir=None)
        self.labels, self.regime, self.split = np.asarray(labels), regime, split

    def mixture(self) -> dict[str, Any]:
        """``{"clean", "noise", "mixed"}`` waveforms (N, length), ``"counts"`` and ``"errors"``
        of the split, computed afresh (the same every time)."""
        waves, counts, errors = read_waveforms(self.paths, self.features.length)
        usable = np.ones(len(self.paths), bool)
        usable[list(errors)] = False
        mixed, noise = degrade_audio(waves, counts, self.labels, self.regime, self.split, usable)
        return {"clean": waves, "noise": noise, "mixed": mixed, "counts": counts, "errors": errors}

    def _bulk_audio(self) -> np.ndarray:
        if self._audio is None:
            with self._lock:
                if self._audio is None:
                    parts = self.mixture()
                    if self.features.kind == "waveform":
                        audio = parts["mixed"]
                    else:
                        audio = self.features.log_mel_many(parts["mixed"], parts["counts"])
                    audio[list(parts["errors"])] = 0
                    self._errors = parts["errors"]
                    self._audio = audio
        return self._audio


# --------------------------------------------------------------------------- images
def occlusion_side(fraction: float) -> int:
    """The side of the square that covers ``fraction`` of the 28x28 image (0: no square)."""
    if fraction <= 0:
        return 0
    return int(min(IMAGE_SIDE, max(1, round(math.sqrt(fraction * IMAGE_SIDE**2)))))


def degrade_images(
    images: np.ndarray,
    blur: float,
    occlusion: float,
    noise: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Blurs, noises and occludes images (N, 28, 28, 1) in [0, 1], in that order.

    ``blur``: a Gaussian filter of that sigma (pixels) over height and width (zeros outside
    the image). ``noise``: additive Gaussian noise of that standard deviation per pixel, then
    clipped to [0, 1]. ``occlusion``: per image, a square of `occlusion_side` pixels (covering
    that fraction of the 28x28 area) at a uniformly drawn position inside the image is set to 0.

    Returns:
        ``(degraded float32, corners (N, 2))``: the images and each square's top-left
        (row, column) (all 0 without occlusion).
    """
    out = np.array(images, np.float32, copy=True)
    if blur > 0:
        ndimage = require("scipy.ndimage", purpose="visual_blur")
        out = ndimage.gaussian_filter(out, sigma=(0, blur, blur, 0), mode="constant", cval=0.0)
        out = out.astype(np.float32)
    side = occlusion_side(occlusion)
    corners = np.zeros((len(out), 2), np.int64)
    if side:
        corners = rng.integers(0, IMAGE_SIDE - side + 1, size=(len(out), 2))
    if noise > 0:
        out += rng.normal(0.0, noise, size=out.shape).astype(np.float32)
        np.clip(out, 0.0, 1.0, out=out)
    if side:
        grid = np.arange(IMAGE_SIDE)
        rows = (grid >= corners[:, :1]) & (grid < corners[:, :1] + side)  # (N, 28)
        cols = (grid >= corners[:, 1:]) & (grid < corners[:, 1:] + side)
        out[rows[:, :, None] & cols[:, None, :]] = 0.0
    return out, corners


def second_pairs(
    pairs: np.ndarray, image_labels: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """For each example, another image of the same digit than ``pairs[i]`` (uniform, seeded).

    Raises:
        DataFormatError: when a digit has a single image in the split's pool.
    """
    pairs = np.asarray(pairs)
    image_labels = np.asarray(image_labels)
    second = np.empty_like(pairs)
    for digit in np.unique(image_labels[pairs]):
        slots = np.flatnonzero(image_labels[pairs] == digit)
        pool = np.flatnonzero(image_labels == digit)
        if pool.size < 2:
            raise DataFormatError(
                "sklearn.datasets.load_digits", f"one image only of digit {digit} for visual2"
            )
        position = np.searchsorted(pool, pairs[slots])  # pool is sorted; pairs are in it
        draw = rng.integers(0, pool.size - 1, size=slots.size)
        second[slots] = pool[draw + (draw >= position)]  # any image of the pool but the first
    return second
