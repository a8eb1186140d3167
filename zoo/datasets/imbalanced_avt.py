"""The embedded data set with a third, text modality made of two inputs (no files).

``imbalanced_av`` (audio, visual; see its module) plus ``text``, a modality of several inputs as
KerasHub text models take them: ``{"token_ids": (T,) int32, "padding_mask": (T,) int32}``.
Each example's text has a length drawn from ``[min_length, T]`` (the rest is padding: id 0, mask
0). Every real position holds, with probability ``text_strength``, the word of its class
(id ``2 + label``), else a random filler word (ids ``2 + 10 .. vocab_size - 1``); id 1 is
reserved (unknown). Text is therefore a third, noisy view of the label whose strength is tuned
like ``visual_strength``.
"""

from __future__ import annotations

import numpy as np

from zoo.datasets.imbalanced_av import _BATCH_OPTIONS, NUM_CLASSES, generate, split_dataset

TEXT_LENGTH = 16
VOCAB_SIZE = 64
_CLASS_WORD_OFFSET = 2


def text_tokens(
    labels: np.ndarray,
    rng: np.random.Generator,
    length: int = TEXT_LENGTH,
    vocab_size: int = VOCAB_SIZE,
    min_length: int = 3,
    text_strength: float = 0.15,
) -> dict[str, np.ndarray]:
    """Token ids and padding masks (int32, (N, length)) for ``labels`` (see the module doc)."""
    if not 1 <= int(min_length) <= int(length):
        raise ValueError(f"min_length must lie in [1, length={length}], got {min_length!r}.")
    if int(vocab_size) < _CLASS_WORD_OFFSET + NUM_CLASSES + 1:
        raise ValueError(
            f"vocab_size must be at least {_CLASS_WORD_OFFSET + NUM_CLASSES + 1} (pad, unknown, "
            f"{NUM_CLASSES} class words, one filler word), got {vocab_size!r}."
        )
    if not 0.0 <= text_strength <= 1.0:
        raise ValueError(f"text_strength must lie in [0, 1], got {text_strength!r}.")
    count = len(labels)
    lengths = rng.integers(int(min_length), int(length) + 1, size=count)
    mask = np.arange(int(length))[None, :] < lengths[:, None]
    filler = rng.integers(_CLASS_WORD_OFFSET + NUM_CLASSES, int(vocab_size), size=(count, length))
    is_class_word = rng.random((count, length)) < text_strength
    tokens = np.where(is_class_word, _CLASS_WORD_OFFSET + labels[:, None], filler)
    return {
        "token_ids": np.where(mask, tokens, 0).astype(np.int32),
        "padding_mask": mask.astype(np.int32),
    }


_CACHE: dict[tuple, dict] = {}
_TEXT_OPTIONS = ("text_length", "vocab_size", "min_length", "text_strength")


def load(root: None, split: str, *, data_seed: int = 0, on_error: str = "raise", **options):
    """Embedded audio-visual-text task: ``imbalanced_av`` plus text as token ids + padding mask.

    Outputs "audio" (40, 40, 1) and "visual" (28, 28, 1) float32 and "text" ``{"token_ids":
    (16,) int32, "padding_mask": (16,) int32}``, int32 labels 0..9. Options of
    ``imbalanced_av`` pass through; ``text_length`` (16), ``vocab_size`` (64), ``min_length``
    (3) and ``text_strength`` (0.15, the chance that a word names the class) shape the text.
    Deterministic by ``data_seed``; ``root`` is ignored.
    """
    del root, on_error
    batch_kwargs = {k: options.pop(k) for k in _BATCH_OPTIONS if k in options}
    text_kwargs = {k: options.pop(k) for k in _TEXT_OPTIONS if k in options}
    key = (data_seed, tuple(sorted(options.items())), tuple(sorted(text_kwargs.items())))

    def make():
        splits = generate(seed=data_seed, **options)
        rng = np.random.default_rng([data_seed, 1])
        length = int(text_kwargs.pop("text_length", TEXT_LENGTH))
        return {
            name: ({**x, "text": text_tokens(y, rng, length, **text_kwargs)}, y)
            for name, (x, y) in splits.items()
        }

    return split_dataset(_CACHE, key, make, split, batch_kwargs)
