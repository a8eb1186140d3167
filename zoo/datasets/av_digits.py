"""AV-Digits: real spoken digits (FSDD) paired by label with scikit-learn's handwritten digits."""

from __future__ import annotations

import functools
import os

import numpy as np

from zoo.datasets import av_digits_regimes as regimes
from zoo.datasets import fsdd
from zoo.datasets._common import Problems
from zoo.datasets._io import require, split_indices
from zoo.datasets.errors import CheckReport, DataFormatError
from zoo.datasets.pipeline import FileDataset

NUM_CLASSES = 10
VISUAL_SHAPE = (28, 28, 1)
IMAGE_FRACTIONS = {"validation": 0.15, "test": 0.15}  # of each digit's 8x8 images
IMAGE_SEED = 1234  # the image split is fixed, so no image is ever in two splits


@functools.lru_cache(maxsize=1)
def digit_images() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled 8x8 digits (1797 images, values 0..16) and their labels.

    Parsed once per process (read-only arrays): ``load_digits`` re-reads its CSV on every call.
    """
    datasets = require("sklearn.datasets", purpose="AV-Digits")
    bunch = datasets.load_digits()
    images, labels = bunch.images.astype(np.float32), bunch.target.astype(np.int32)
    images.flags.writeable = labels.flags.writeable = False
    return images, labels


def upscale(images: np.ndarray) -> np.ndarray:
    """(N, 8, 8) in 0..16 -> (N, 28, 28, 1) in [0, 1]: 3x nearest upsampling, 2-pixel border."""
    out = np.zeros((len(images), 28, 28, 1), np.float32)
    scaled = np.asarray(images, np.float32) * np.float32(1 / 16)
    out[:, 2:26, 2:26, 0] = scaled.repeat(3, axis=1).repeat(3, axis=2)
    return out


def image_split(split: str) -> tuple[np.ndarray, np.ndarray]:
    """The 8x8 images and labels of one split (stratified, disjoint across splits)."""
    images, labels = digit_images()
    rest, test = split_indices(len(labels), IMAGE_FRACTIONS["test"], IMAGE_SEED, labels)
    share = IMAGE_FRACTIONS["validation"] / (1 - IMAGE_FRACTIONS["test"])
    train_local, validation_local = split_indices(len(rest), share, IMAGE_SEED + 1, labels[rest])
    chosen = {"train": rest[train_local], "validation": rest[validation_local], "test": test}[split]
    return images[chosen], labels[chosen]


def pair_images(audio_labels: np.ndarray, image_labels: np.ndarray, seed: int) -> np.ndarray:
    """For each audio example, the index of an image with the same label (seeded, balanced).

    Each digit's images are permuted with ``seed`` and handed out in turn, cycling, so every
    image is used about equally often and the same seed always gives the same pairs.
    """
    rng = np.random.default_rng([seed, 7])
    pairs = np.empty(len(audio_labels), np.int64)
    for digit in range(NUM_CLASSES):
        slots = np.flatnonzero(audio_labels == digit)
        pool = np.flatnonzero(image_labels == digit)
        if slots.size and not pool.size:
            raise DataFormatError("sklearn.datasets.load_digits", f"no image of digit {digit}")
        pool = pool[rng.permutation(len(pool))]
        pairs[slots] = pool[np.arange(len(slots)) % len(pool)]
    return pairs


class AVDigitsReader:
    """FSDD audio (through `fsdd.FSDDReader`: bulk, vectorised, disk-cached) + the paired image.

    ``split_images`` are the split's 8x8 images and ``pairs[i]`` the image of example i;
    images are upscaled to 28x28 per batch, so no (N, 28, 28) copy of the split is made.
    ``visual`` (N, 28, 28, 1), when given, holds every example's (degraded) image instead, and
    ``extra`` further image inputs ``{modality: (N, 28, 28, 1)}`` (the regimes' ``visual2``).
    """

    def __init__(
        self,
        speech: fsdd.FSDDReader,
        split_images: np.ndarray,
        pairs: np.ndarray,
        visual: np.ndarray | None = None,
        extra: dict[str, np.ndarray] | None = None,
    ):
        self.speech, self.split_images, self.pairs = speech, split_images, pairs
        self.visual, self.extra = visual, dict(extra or {})

    @property
    def paths(self) -> list[str]:
        return self.speech.paths

    @property
    def features(self) -> fsdd.SpeechFeatures:
        return self.speech.features

    @property
    def images(self) -> np.ndarray:
        """Every example's 28x28 image, in example order, (N, 28, 28, 1)."""
        if self.visual is not None:
            return self.visual
        return upscale(self.split_images[self.pairs])

    def _images(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        if self.visual is not None:
            visual = self.visual[indices]
        else:
            visual = upscale(self.split_images[self.pairs[indices]])
        return {"visual": visual, **{m: a[indices] for m, a in self.extra.items()}}

    def read_batch(self, indices: np.ndarray) -> dict[str, np.ndarray] | None:
        """Every modality of a batch, one gather each (None: read them one by one)."""
        audio = self.speech.audio_batch(indices)
        if audio is None:
            return None
        return {"audio": audio, **self._images(np.asarray(indices))}

    def __call__(self, index: int) -> dict[str, np.ndarray]:
        images = {m: a[0] for m, a in self._images(np.array([index])).items()}
        return {"audio": self.speech.audio(index), **images}


def _build(
    root: str,
    split: str,
    problems: Problems,
    pairing_seed: int = 0,
    on_error: str = "raise",
    cache: bool = True,
    **options,
) -> FileDataset:
    regime = regimes.Regime.pop(options)
    features = fsdd.SpeechFeatures(**fsdd._pop(options, fsdd.FEATURE_OPTIONS))
    split_options = fsdd._pop(options, fsdd.SPLIT_OPTIONS)
    records = fsdd.split_records(fsdd.index_recordings(root, problems), split, **split_options)
    if not records:
        raise DataFormatError(fsdd.recordings_dir(root), f"no recording falls in the {split} split")
    labels = np.array([r[1] for r in records], np.int32)
    images, image_labels = image_split(split)
    pairs = pair_images(labels, image_labels, pairing_seed)
    second = None
    if regime.third_modality == "visual2":
        second = regimes.second_pairs(pairs, image_labels, regime.rng(split, regimes.PAIR2_STREAM))
    if split == "train" and regime.train_fraction < 1:
        keep = regimes.stratified_subset(
            labels, regime.train_fraction, regime.rng(split, regimes.SUBSET_STREAM)
        )
        records, labels, pairs = [records[i] for i in keep], labels[keep], pairs[keep]
        second = None if second is None else second[keep]
    if regime.audio_degraded:
        options.pop("feature_cache", None)  # never mixed with clean features on disk
        options["workers"] = 1  # batches are gathers from memory (see fsdd.make_reader)
        speech = regimes.DegradedSpeechReader(
            [r[0] for r in records], features, labels, regime, split
        )
        if options.pop("prefetch", True):
            speech.prefetch()
    else:
        speech = fsdd.make_reader(root, records, features, cache, options)
    visual = None
    if regime.visual_degraded:
        visual, _ = regimes.degrade_images(
            upscale(images[pairs]),
            regime.visual_blur,
            regime.visual_occlusion,
            regime.visual_noise,
            regime.rng(split, regimes.VISUAL_STREAM),
        )
    extra, shapes = {}, {"audio": features.shape, "visual": VISUAL_SHAPE}
    if second is not None:
        extra["visual2"], _ = regimes.degrade_images(
            upscale(images[second]),
            regime.visual2_blur,
            regime.visual2_occlusion,
            regime.visual2_noise,
            regime.rng(split, regimes.VISUAL2_STREAM),
        )
        shapes["visual2"] = VISUAL_SHAPE
    return FileDataset(
        AVDigitsReader(speech, images, pairs, visual=visual, extra=extra),
        labels,
        shapes,
        on_error=on_error,
        cache=cache,
        num_classes=NUM_CLASSES,
        class_names=[str(d) for d in range(NUM_CLASSES)],
        split=split,
        **options,
    )


def load(root: str, split: str, **options) -> FileDataset:
    """AV-Digits: FSDD speech paired by label with scikit-learn's bundled handwritten digits.

    ``root`` is an FSDD folder (see ``fsdd``); the images come from
    ``sklearn.datasets.load_digits`` (1797 8x8 images, no download). Each recording is paired
    with an image of the same digit: each digit's images are permuted with ``pairing_seed`` and
    dealt out in turn, so the same seed gives the same pairs. Images are split once, stratified
    70/15/15 into train/validation/test, so no image appears in two splits.

    Outputs "audio" as FSDD (default log-mel (40, 40, 1), or ``audio_features="waveform"``) and
    "visual" (28, 28, 1) in [0, 1] (8x8 upsampled 3x, 2-pixel border): the shapes of the zoo's
    ``late_fusion_av_cnn`` defaults. Splits as FSDD: by take (default) or
    ``split_by="speaker"`` (speaker-independent, ``test_speakers``/``validation_speakers``).
    Use `write_avmnist_layout` to save it in the AV-MNIST layout for the ``avmnist`` loader.
    Audio features are computed for the whole split at the first batch read and kept in memory
    and (log-mel) on disk, as FSDD's (``cache``, ``feature_cache``, ``prefetch``: computed in a
    background thread from ``load`` on; see ``fsdd.load``).

    Imbalance regimes (`zoo.datasets.av_digits_regimes`): options that move which modality
    dominates, and by how much. Each is off by default (the data are then exactly as without
    it); each is drawn from ``degrade_seed`` (int >= 0, default 0; the same seed gives the same
    arrays), independently per split, and applies to train, validation and test alike unless
    said otherwise. A value out of range raises a ValueError naming the option.

    - ``audio_snr_db`` (float dB, default None = clean): each recording is mixed with noise at
      this signal-to-noise ratio, on the waveform before the features, so "audio" holds the
      features of the noisy recording. The SNR is exact over the clip's active samples (its
      own samples, before the zero padding to ``duration``); noise covers only those, and the
      mixture is not clipped. ``audio_noise``: ``"babble"`` (default) = the sum of
      ``babble_talkers`` (default 3, 1..9) other recordings of the same split, of distinct
      digits all different from the example's, each scaled to unit RMS and repeated to cover
      the clip; ``"white"`` = Gaussian noise. The mixtures are computed for the whole split
      at the first read (also with ``cache=False``; about 0.6 s for 2400 recordings) and
      never use the disk cache, so clean and noisy features are never mixed up.
    - ``visual_blur`` (Gaussian sigma in pixels of the 28x28 image, default 0),
      ``visual_occlusion`` (fraction in [0, 1] of the 28x28 area covered by a zero square at a
      random position inside the image, drawn per example; default 0) and ``visual_noise``
      (std of additive Gaussian pixel noise, clipped to [0, 1]; default 0), applied in the
      order blur, noise, occlusion.
    - ``train_fraction`` (in (0, 1], default 1): the train split keeps a seeded, stratified
      subset of ``fraction * n`` (rounded half up, at least 1) recordings of each digit, each
      with the image it has in the whole split; validation and test are unchanged.
    - ``third_modality`` (None or ``"visual2"``): adds the input "visual2" (28, 28, 1): a
      second handwritten image of the example's digit, drawn from the same split's images and
      always different from the "visual" one, degraded by ``visual2_blur`` (default 0),
      ``visual2_occlusion`` (default 0.5: a zero square of 20x20 pixels) and ``visual2_noise``
      (default 0) as above. With these defaults it is moderately informative: the zoo's conv
      encoder trained on it alone reaches about 40-46 % test accuracy (Adam 1e-3, 30-60
      epochs; 42 % speaker-independent), against about 85 % for the clean "visual" image and
      63 % for the clean speech. Models: ``late_fusion_av3_cnn`` / ``early_fusion_av3_cnn``.

    Measured informativeness of the levels (each modality trained alone with the zoo's conv
    encoder, Adam 1e-3, 60 epochs, speaker-dependent test split; one seed): speech clean 63 %,
    babble 20 dB 60 %, 10 dB 48 %, 5 dB 38 %, 0 dB 26 %, -5 dB 16 % (speaker-independent clean
    34 %); images clean 85 %, blur 1.5 80 %, blur 2.5 73 %, occlusion 0.6 39 %.
    """
    return _build(root, split, Problems(), **options)


def check(root: str, report: CheckReport, deep: bool = True, **options) -> None:
    """Checks the FSDD folder (names, labels, and with ``deep`` every recording)."""
    regimes.Regime.pop(options)  # checked; the recordings are the same in every regime
    fsdd.check(root, report, deep=deep, **options)


def write_avmnist_layout(
    fsdd_root: str,
    out_root: str,
    pairing_seed: int = 0,
    **options,
) -> dict[str, int]:
    """Writes AV-Digits in the AV-MNIST (MultiBench) layout, so one model and loader serve both.

    Writes ``image/{train,test}_data.npy`` (N, 784) and ``audio/{train,test}_data.npy``
    (N, 112, 112), both float32 in 0..255, and ``{train,test}_labels.npy``. The train files hold
    the train split followed by the validation split; read them back with
    ``zoo.datasets.load("avmnist", root=out_root, split=..., validation_size=<returned>)``.
    Audio is a 112-band log-mel over 112 frames (1 s at 8 kHz), in dB over 80 dB mapped to
    0..255. Derived from FSDD, the files stay under CC BY-SA 4.0.

    Returns:
        ``{"train": n, "validation": n, "test": n, "validation_size": n}``.
    """
    regime = regimes.Regime.pop(dict(options))
    if regime != regimes.Regime():
        raise ValueError(
            "write_avmnist_layout writes the clean data set; it takes no regime option "
            "(audio_snr_db, visual_*, train_fraction, third_modality, ...)."
        )
    librosa = require("librosa", purpose="write_avmnist_layout")
    features = fsdd.SpeechFeatures("waveform", duration=1.0)
    hop = -(-features.length // 112)
    arrays = {}
    for split in ("train", "validation", "test"):
        dataset = _build(
            fsdd_root, split, Problems(), pairing_seed=pairing_seed, batch_size=256, **options
        )
        audio = []
        for path in dataset.read_example.paths:
            samples = features(path)
            mel = librosa.feature.melspectrogram(
                y=samples, sr=fsdd.SAMPLE_RATE, n_fft=512, hop_length=hop, n_mels=112
            )[:, :112]
            db = librosa.power_to_db(mel, ref=np.max, top_db=80.0)
            audio.append((db + 80.0) / 80.0 * 255.0)
        visual = dataset.read_example.images[..., 0] * 255.0
        arrays[split] = (
            visual.reshape(len(visual), 784).astype(np.float32),
            np.stack(audio).astype(np.float32),
            dataset.labels.astype(np.int64),
        )
    os.makedirs(os.path.join(out_root, "image"), exist_ok=True)
    os.makedirs(os.path.join(out_root, "audio"), exist_ok=True)
    parts = {
        "train": [
            np.concatenate(z) for z in zip(arrays["train"], arrays["validation"], strict=True)
        ],
        "test": list(arrays["test"]),
    }
    for part, (image, audio, labels) in parts.items():
        np.save(os.path.join(out_root, "image", f"{part}_data.npy"), image)
        np.save(os.path.join(out_root, "audio", f"{part}_data.npy"), audio)
        np.save(os.path.join(out_root, f"{part}_labels.npy"), labels)
    sizes = {split: len(arrays[split][2]) for split in arrays}
    sizes["validation_size"] = sizes["validation"]
    return sizes
