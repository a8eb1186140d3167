"""Batches from whatever `fit` takes, for the evaluation and analysis helpers.

`iterate_batches` accepts ``{modality: array}`` with labels ``y`` (sliced into batches), a
`keras.utils.PyDataset` (e.g. from ``zoo.datasets.load``), a ``tf.data.Dataset`` (TensorFlow
installed), a ``torch.utils.data.DataLoader`` (the torch backend) or any iterable of
``(inputs, labels)`` / ``(inputs, labels, sample_weight)`` batches, and yields numpy batches
``({modality: array}, labels)``. A data source carries its labels, so ``y`` must then be None.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from keras_msam.absence import leaf_paths, leaves, map_leaves


def is_array_input(x: Any) -> bool:
    """Whether ``x`` is ``{modality: array}`` (to be sliced) rather than a data source."""
    return isinstance(x, dict)


def to_numpy(value: Any) -> np.ndarray:
    """A numpy array from a numpy, TensorFlow, JAX or torch array (on any device)."""
    if isinstance(value, np.ndarray):
        return value
    if hasattr(value, "detach"):  # torch
        return value.detach().cpu().numpy()
    if hasattr(value, "numpy"):  # TensorFlow eager tensors
        return np.asarray(value.numpy())
    return np.asarray(value)


def concatenate_batches(batches: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """One ``{modality: array}`` (nested for a modality of several inputs) from a list of
    batches, concatenated along the example axis."""
    return map_leaves(lambda *parts: np.concatenate([np.asarray(p) for p in parts]), *batches)


def _array_batches(
    x: dict[str, Any], y: Any, batch_size: int, where: str
) -> Iterator[tuple[dict[str, np.ndarray], np.ndarray]]:
    if y is None:
        raise ValueError(
            f"{where}: arrays {{modality: array}} need their labels: pass y (or pass a data set "
            "that yields (inputs, labels) batches, such as zoo.datasets.load(...))."
        )
    labels = to_numpy(y)
    count = len(labels)
    for path, array in zip(leaf_paths(x), leaves(x)):
        if len(array) != count:
            raise ValueError(
                f"{where}: modality {'/'.join(path)!r} has {len(array)} examples but y has {count}."
            )
    for start in range(0, count, batch_size):
        yield (
            map_leaves(lambda v, s=start: to_numpy(v[s : s + batch_size]), x),
            labels[start : start + batch_size],
        )


def _source_batches(source: Any, where: str) -> Iterator[Any]:
    """The raw batches of a data source, one pass."""
    import keras

    if isinstance(source, keras.utils.PyDataset):
        count = source.num_batches
        if count is None:
            raise ValueError(
                f"{where}: the PyDataset has no length (num_batches is None): an evaluation "
                "needs one pass over a finite data set."
            )
        for index in range(count):
            yield source[index]
        return
    module = type(source).__module__
    if module.startswith("tensorflow") and hasattr(source, "as_numpy_iterator"):
        yield from source.as_numpy_iterator()
        return
    if isinstance(source, (str, bytes, np.ndarray)) or not hasattr(source, "__iter__"):
        raise TypeError(
            f"{where}: expected {{modality: array}} with y, a keras.utils.PyDataset, a "
            f"tf.data.Dataset, a torch DataLoader or an iterable of (inputs, labels) batches; "
            f"got {type(source).__name__}."
        )
    yield from source


def iterate_batches(
    x: Any, y: Any = None, batch_size: int = 256, where: str = "x"
) -> Iterator[tuple[dict[str, np.ndarray], np.ndarray]]:
    """Yields ``({modality: numpy array}, numpy labels)`` batches of ``x`` (see module doc).

    Raises:
        ValueError: arrays without ``y``, a data source with ``y``, a batch that is not
            ``(inputs, labels[, sample_weight])`` with dict inputs, or an infinite PyDataset.
        TypeError: an ``x`` of no supported kind.
    """
    if is_array_input(x):
        yield from _array_batches(x, y, batch_size, where)
        return
    if y is not None:
        raise ValueError(
            f"{where} is a data set ({type(x).__name__}) that yields its own labels: "
            "y must be None."
        )
    for number, batch in enumerate(_source_batches(x, where)):
        if not isinstance(batch, (tuple, list)) or len(batch) not in (2, 3):
            raise ValueError(
                f"{where}: batch {number} is a {type(batch).__name__}; expected "
                "(inputs, labels) or (inputs, labels, sample_weight)."
            )
        inputs, labels = batch[0], batch[1]
        if not isinstance(inputs, dict):
            raise ValueError(
                f"{where}: batch {number} has inputs of type {type(inputs).__name__}; expected "
                "a dict {modality: array}."
            )
        yield map_leaves(to_numpy, dict(inputs)), to_numpy(labels)
