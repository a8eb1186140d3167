"""The loader registry: `list`, `load`, `check`, `describe`, `register`."""

from __future__ import annotations

import builtins
import dataclasses
import difflib
import fnmatch
import os
from collections.abc import Callable
from typing import Any

import numpy as np

from zoo.datasets.errors import CheckReport, DataFormatError
from zoo.datasets.pipeline import MultimodalDataset

SPLITS = ("train", "validation", "test")


@dataclasses.dataclass(frozen=True)
class DatasetEntry:
    """A registered data set: how to load it, how to check it, and what it holds."""

    name: str
    loader: Callable[..., MultimodalDataset]
    checker: Callable[..., CheckReport] | None
    description: str
    needs_root: bool = True


_REGISTRY: dict[str, DatasetEntry] = {}


def register(
    name: str,
    loader: Callable[..., MultimodalDataset],
    checker: Callable[..., CheckReport] | None = None,
    description: str = "",
    needs_root: bool = True,
) -> None:
    """Registers a loader ``loader(root, split, **options) -> MultimodalDataset`` under ``name``."""
    if name in _REGISTRY:
        raise ValueError(f"A data set named {name!r} is already registered.")
    doc = description or ((loader.__doc__ or "").strip().splitlines() or [""])[0]
    _REGISTRY[name] = DatasetEntry(name, loader, checker, doc, needs_root)


def list(pattern: str = "*") -> builtins.list[str]:  # noqa: A001 (timm-style API name)
    """Returns the sorted names of registered data sets matching a shell-style ``pattern``."""
    return sorted(n for n in _REGISTRY if fnmatch.fnmatch(n, pattern))


def _entry(name: str) -> DatasetEntry:
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, _REGISTRY, n=3, cutoff=0.4)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise KeyError(f"Unknown data set {name!r}.{hint} Known: {', '.join(list())}.")
    return _REGISTRY[name]


def describe(name: str) -> str:
    """Returns the loader's documentation: the format it reads, its preprocessing and shapes."""
    entry = _entry(name)
    return (entry.loader.__doc__ or entry.description).strip()


def load(
    name: str,
    root: str | os.PathLike | None = None,
    split: str = "train",
    *,
    batch_size: int = 32,
    shuffle: bool | None = None,
    seed: int = 0,
    drop_remainder: bool = False,
    modalities: builtins.list[str] | tuple[str, ...] | None = None,
    workers: int = 1,
    use_multiprocessing: bool = False,
    on_error: str = "raise",
    as_numpy: bool = False,
    **options: Any,
) -> MultimodalDataset | tuple[dict[str, np.ndarray], np.ndarray]:
    """Loads one split of a registered data set, ready for `model.fit`.

    Args:
        name: A name from `zoo.datasets.list()`.
        root: The data set's directory (or file, for the pickled affect sets). Not needed by
            generated data sets. Nothing is downloaded: a missing or malformed root raises a
            `DataFormatError` naming the file that is wrong.
        split: "train", "validation" or "test".
        batch_size: Examples per batch.
        shuffle: Shuffle each epoch (seeded); default True for "train", False otherwise.
        seed: Seed of the shuffling. Data-defining seeds are separate options (``split_seed``,
            ``pairing_seed``, ``data_seed``), so reshuffling never changes the data itself.
        drop_remainder: Drop the last, smaller batch (keeps every batch shape fixed for jit).
        modalities: Keep only these input keys (default: all the data set has).
        workers: Threads that decode batches in parallel (file-based data sets).
        use_multiprocessing: Use processes instead of threads (see `keras.utils.PyDataset`).
        on_error: For file-based data sets, "raise" on an unreadable file (default) or "skip" it
            with a counted warning.
        as_numpy: Return the whole split as in-memory arrays ``({modality: array}, labels)``
            instead of a batched `PyDataset`.
        **options: Format-specific options, documented by `zoo.datasets.describe(name)`. Every
            file-based loader also takes ``cache`` (keep decoded examples in memory after the
            first epoch; default True for FSDD and AV-Digits, False for the large sets).

    Returns:
        A `MultimodalDataset` (a `keras.utils.PyDataset`) whose batches are
        ``({modality: float32 array}, labels)``, or the arrays when ``as_numpy=True``.
    """
    entry = _entry(name)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}.")
    if entry.needs_root and root is None:
        raise ValueError(f"Data set {name!r} reads files: pass root=<its directory>.")
    if root is not None:
        root = os.fspath(root)
        if entry.needs_root and not os.path.exists(root):
            raise DataFormatError(root, "data set root does not exist")
    dataset = entry.loader(
        root,
        split,
        batch_size=batch_size,
        shuffle=(split == "train") if shuffle is None else shuffle,
        seed=seed,
        drop_remainder=drop_remainder,
        modalities=modalities,
        workers=workers,
        use_multiprocessing=use_multiprocessing,
        on_error=on_error,
        **options,
    )
    dataset.name = name
    return dataset.to_numpy() if as_numpy else dataset


def check(name: str, root: str | os.PathLike | None = None, **options) -> CheckReport:
    """Checks a data set on disk and reports every problem by path.

    Reports missing files, wrong array shapes or dtypes, unknown labels and unreadable audio or
    image files. Decoding every file can take a while on a full data set; pass ``deep=False``
    to check only the layout, split files, arrays and file existence.

    Returns:
        A `CheckReport`; ``report.ok`` is True when nothing is wrong, ``report.format()`` prints it.
    """
    entry = _entry(name)
    report = CheckReport(name=name, root=os.fspath(root) if root is not None else "")
    if entry.needs_root:
        if root is None:
            raise ValueError(f"Data set {name!r} reads files: pass the root to check.")
        if not os.path.exists(root):
            report.add(root, "data set root does not exist")
            return report
    if entry.checker is None:
        for split in SPLITS:
            try:
                dataset = entry.loader(report.root or None, split, **options)
                report.summary[split] = f"{dataset.num_examples} examples, {dataset.input_shapes}"
            except DataFormatError as error:
                report.add_error(error)
                continue
            _report_nonfinite(report, split, dataset)
        return report
    entry.checker(report.root, report, **options)
    return report


def _report_nonfinite(report: CheckReport, split: str, dataset: MultimodalDataset) -> None:
    """Adds a problem per in-memory array (inputs of an `ArrayDataset`, labels) that holds NaN
    or inf, naming the split, the modality and the first example indices."""
    arrays = dict(getattr(dataset, "inputs", None) or {})
    arrays["labels"] = getattr(dataset, "labels", None)
    for key, array in sorted(arrays.items()):
        if not isinstance(array, np.ndarray) or array.dtype.kind not in "fc" or not array.size:
            continue
        bad = np.flatnonzero(~np.isfinite(array.reshape(len(array), -1)).all(axis=1))
        if bad.size:
            shown = ", ".join(str(i) for i in bad[:10]) + (" ..." if bad.size > 10 else "")
            report.add(
                f"{split}/{key}",
                f"non-finite values (NaN or inf) in {bad.size} example(s), index {shown}",
            )
