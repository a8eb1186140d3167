"""Batching for `fit`: `keras.utils.PyDataset`s that yield ``({modality: array}, label)`` tuples.

Every batch has the same keys and per-example shapes (only the last batch may be smaller, unless
``drop_remainder=True``), so `model.fit` takes it on TensorFlow, JAX and PyTorch alike. Batches are
tuples, never lists or bare dicts (see keras#20600 / keras#23080). Shuffling is seeded: epoch ``e``
uses the permutation drawn from ``(seed, e)``, so two runs with the same seed see the same order.
Note that `fit(shuffle=True)` (its default) also reorders whole batches of a PyDataset with
Python's unseeded ``random``; pass ``shuffle=False`` to `fit` for a fully reproducible order (the
loader already shuffles examples).

Two kinds:

* `ArrayDataset` — in-memory (or memory-mapped) numpy arrays; `to_numpy()` gives them back.
* `FileDataset` — examples decoded from files on demand by a reader; ``workers`` > 1 decodes
  batches in parallel threads (Keras' PyDataset worker pool). A file that cannot be read either
  raises a `DataFormatError` naming it (``on_error="raise"``, the default) or is skipped with a
  counted warning (``on_error="skip"``): the batch is then smaller by one, the file is recorded in
  `skipped_files`, and later epochs leave it out. A corrupt file is never replaced silently.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np

from zoo.datasets.errors import DataFormatError

ON_ERROR_CHOICES = ("raise", "skip")


def _per_input(fn: Callable, value: Any) -> Any:
    """``fn`` on each array of a modality: one array, or a dict of them (several inputs)."""
    if isinstance(value, dict):
        return {key: _per_input(fn, item) for key, item in value.items()}
    return fn(value)


def _arrays(value: Any) -> list[np.ndarray]:
    if isinstance(value, dict):
        return [array for key in sorted(value) for array in _arrays(value[key])]
    return [value]


class MultimodalDataset(keras.utils.PyDataset):
    """Base class: a seeded, batched sequence of ``({modality: array}, labels)`` tuples.

    Attributes:
        name: Registered data set name.
        split: "train", "validation" or "test".
        modalities: The keys of every input dict, sorted.
        input_shapes: ``{modality: per-example shape}``; for a modality of several inputs
            (e.g. text as ``{"token_ids", "padding_mask"}``) a dict ``{input: shape}``.
        num_classes: Number of classes (None for regression labels).
        class_names: Class names, index = label, when the format has them.
        num_examples: Examples in this split (before any skipped file).
    """

    def __init__(
        self,
        *,
        labels: np.ndarray,
        input_shapes: dict[str, tuple[int, ...]],
        name: str = "",
        split: str = "",
        num_classes: int | None = None,
        class_names: Sequence[str] | None = None,
        batch_size: int = 32,
        shuffle: bool = False,
        seed: int = 0,
        drop_remainder: bool = False,
        modalities: Sequence[str] | None = None,
        workers: int = 1,
        use_multiprocessing: bool = False,
        max_queue_size: int = 10,
    ):
        super().__init__(
            workers=workers, use_multiprocessing=use_multiprocessing, max_queue_size=max_queue_size
        )
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size!r}.")
        available = sorted(input_shapes)
        if modalities is None:
            selected = available
        else:
            unknown = sorted(set(modalities) - set(available))
            if unknown:
                raise ValueError(
                    f"Unknown modalities {unknown} for data set {name!r}; it has {available}."
                )
            selected = sorted(set(modalities))
        self.name = name
        self.split = split
        self.modalities = tuple(selected)
        self.input_shapes = {m: _per_input(tuple, input_shapes[m]) for m in self.modalities}
        self.labels = np.asarray(labels)
        self.num_classes = num_classes
        self.class_names = list(class_names) if class_names is not None else None
        self.num_examples = len(self.labels)
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.drop_remainder = bool(drop_remainder)
        self.epoch = 0
        self._excluded: set[int] = set()
        self._order = self._make_order()

    def _make_order(self) -> np.ndarray:
        indices = np.arange(self.num_examples)
        if self._excluded:
            indices = np.setdiff1d(indices, np.fromiter(self._excluded, np.int64))
        if self.shuffle:
            rng = np.random.default_rng([self.seed, self.epoch])
            indices = indices[rng.permutation(len(indices))]
        return indices

    def __len__(self) -> int:
        count = len(self._order)
        if self.drop_remainder:
            return count // self.batch_size
        return -(-count // self.batch_size)

    def on_epoch_end(self) -> None:
        self.epoch += 1
        self._order = self._make_order()

    def set_epoch(self, epoch: int, seed: int | None = None) -> None:
        """Puts the shuffling at ``epoch`` (and optionally a new ``seed``): a run resumed at
        epoch e sees the same order as one that never stopped."""
        if seed is not None:
            self.seed = int(seed)
        self.epoch = int(epoch)
        self._order = self._make_order()

    def __getitem__(self, index: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
        if not 0 <= index < len(self):
            raise IndexError(f"batch index {index} out of range for {len(self)} batches")
        indices = self._order[index * self.batch_size : (index + 1) * self.batch_size]
        return self._batch(indices)

    def _batch(self, indices: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
        raise TypeError(f"{type(self).__name__} does not define _batch(indices).")

    def to_numpy(self) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Returns the whole split as ``({modality: array}, labels)`` in file order."""
        indices = np.setdiff1d(np.arange(self.num_examples), np.fromiter(self._excluded, np.int64))
        return self._batch(indices)

    def __repr__(self) -> str:
        shapes = ", ".join(f"{m}={s}" for m, s in self.input_shapes.items())
        return (
            f"<{type(self).__name__} {self.name}/{self.split}: {self.num_examples} examples, "
            f"{len(self)} batches of {self.batch_size}, inputs {shapes}>"
        )


class ArrayDataset(MultimodalDataset):
    """Batches of in-memory (or memory-mapped) arrays.

    Args:
        inputs: ``{modality: array}`` with a leading example axis (float32 after ``transform``);
            a modality of several inputs is a dict of arrays (``{"token_ids": int array,
            "padding_mask": bool array}``), each keeping its dtype (floats become float32).
        labels: Labels, one per example.
        transforms: Optional ``{modality: fn}`` applied to each gathered batch (e.g. /255).
        **kwargs: See `MultimodalDataset`.
    """

    def __init__(
        self,
        inputs: dict[str, np.ndarray],
        labels: np.ndarray,
        transforms: dict[str, Callable[[np.ndarray], np.ndarray]] | None = None,
        **kwargs,
    ):
        lengths = {m: _per_input(len, a) for m, a in inputs.items()}
        if any(len(x) != len(labels) for a in inputs.values() for x in _arrays(a)):
            raise ValueError(f"Inputs {lengths} and labels ({len(labels)}) differ in length.")
        self._transforms = dict(transforms or {})
        shapes = {m: _per_input(lambda x: tuple(x.shape[1:]), a) for m, a in inputs.items()}
        shapes = {m: self._transformed_shape(m, a, shapes[m]) for m, a in inputs.items()}
        super().__init__(labels=labels, input_shapes=shapes, **kwargs)
        self.inputs = {m: inputs[m] for m in self.modalities}

    def _transformed_shape(self, modality: str, array: Any, shape: Any):
        if modality not in self._transforms or isinstance(array, dict) or len(array) == 0:
            return shape
        return tuple(self._transforms[modality](np.asarray(array[:1])).shape[1:])

    def _batch(self, indices: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
        batch = {}
        for modality, array in self.inputs.items():
            if isinstance(array, dict):  # several inputs: each gathered, its dtype kept
                batch[modality] = _per_input(lambda a: _keep_dtype(_gather(a, indices)), array)
                continue
            values = _gather(array, indices)
            if modality in self._transforms:
                values = self._transforms[modality](values)
            batch[modality] = np.ascontiguousarray(values, dtype=np.float32)
        return batch, self.labels[indices]


def _gather(array: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """``array[indices]``; a memmap is read in sorted order, then put back in order."""
    if not _is_memmap(array):
        return np.asarray(array[indices])
    return np.asarray(array[np.sort(indices)])[np.argsort(np.argsort(indices))]


def _keep_dtype(values: np.ndarray) -> np.ndarray:
    dtype = np.float32 if np.issubdtype(values.dtype, np.floating) else values.dtype
    return np.ascontiguousarray(values, dtype=dtype)


def _is_memmap(array: np.ndarray) -> bool:
    return isinstance(array, np.memmap)


class FileDataset(MultimodalDataset):
    """Batches decoded from files on demand.

    Args:
        read_example: ``read_example(i) -> {modality: float32 array}``; raises `DataFormatError`
            naming the file it could not read. Must be thread-safe. It may also have
            ``read_batch(indices) -> {modality: (len(indices), ...) array} | None``: a
            vectorised read of a whole batch (e.g. one gather from features kept in memory),
            used instead of per-example reads when it returns a dict; None means "read these
            one by one" (e.g. one of them is unreadable, so it must be raised or skipped).
        labels: One label per example.
        input_shapes: ``{modality: per-example shape}`` that every read example has.
        on_error: "raise" (default) or "skip" (counted warning, smaller batch; see module doc).
        cache: Keep every decoded example in memory after its first read, so later epochs
            only gather arrays (for data sets whose features fit in memory, e.g. FSDD).
        **kwargs: See `MultimodalDataset`.
    """

    def __init__(
        self,
        read_example: Callable[[int], dict[str, np.ndarray]],
        labels: np.ndarray,
        input_shapes: dict[str, tuple[int, ...]],
        on_error: str = "raise",
        cache: bool = False,
        **kwargs,
    ):
        if on_error not in ON_ERROR_CHOICES:
            raise ValueError(f"on_error must be one of {ON_ERROR_CHOICES}, got {on_error!r}.")
        super().__init__(labels=labels, input_shapes=input_shapes, **kwargs)
        self.read_example = read_example
        self.on_error = on_error
        self.skipped_files: dict[str, str] = {}
        self._lock = threading.Lock()
        self._cache: dict[int, dict[str, np.ndarray]] | None = {} if cache else None

    def _read(self, index: int) -> dict[str, np.ndarray]:
        if self._cache is None:
            return self.read_example(index)
        example = self._cache.get(index)
        if example is None:
            example = self.read_example(index)
            self._cache[index] = example  # dict item assignment is atomic under the GIL
        return example

    def _batch(self, indices: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
        read_batch = getattr(self.read_example, "read_batch", None)
        batch = None if read_batch is None else read_batch(indices)
        if batch is not None:
            return self._checked_batch(batch, indices), self.labels[indices]
        examples, kept = [], []
        for index in indices:
            try:
                example = self._read(int(index))
            except DataFormatError as error:
                if self.on_error == "raise":
                    raise
                self._record_skip(int(index), error)
                continue
            for modality in self.modalities:
                shape = example[modality].shape
                if shape != self.input_shapes[modality]:
                    raise ValueError(
                        f"Example {index} of {self.name}/{self.split} has {modality} shape "
                        f"{shape}, expected {self.input_shapes[modality]} (a loader bug)."
                    )
            examples.append(example)
            kept.append(index)
        if not examples:
            raise DataFormatError(
                f"{self.name}/{self.split}",
                f"every file of a batch was unreadable (skipped so far: {len(self.skipped_files)})",
            )
        batch = {m: np.stack([e[m] for e in examples]).astype(np.float32) for m in self.modalities}
        return batch, self.labels[np.asarray(kept)]

    def _checked_batch(
        self, batch: dict[str, np.ndarray], indices: np.ndarray
    ) -> dict[str, np.ndarray]:
        checked = {}
        for modality in self.modalities:
            values = batch[modality]
            if values.shape[1:] != self.input_shapes[modality] or len(values) != len(indices):
                raise ValueError(
                    f"A batch of {len(indices)} examples of {self.name}/{self.split} has "
                    f"{modality} shape {values.shape}, expected "
                    f"{(len(indices), *self.input_shapes[modality])} (a loader bug)."
                )
            checked[modality] = np.ascontiguousarray(values, dtype=np.float32)
        return checked

    def _record_skip(self, index: int, error: DataFormatError) -> None:
        with self._lock:
            self._excluded.add(index)
            self.skipped_files[error.path] = error.reason
            count = len(self.skipped_files)
        warnings.warn(
            f"Skipped unreadable example {index} of {self.name}/{self.split}: {error} "
            f"({count} file(s) skipped so far; see .skipped_files).",
            RuntimeWarning,
            stacklevel=2,
        )
