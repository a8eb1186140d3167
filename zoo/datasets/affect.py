"""MultiBench affect pickles: CMU-MOSI, CMU-MOSEI, UR-FUNNY (humor), MUStARD (sarcasm)."""

from __future__ import annotations

import os

import numpy as np

from zoo.datasets._common import Problems
from zoo.datasets._io import read_pickle
from zoo.datasets.errors import CheckReport, DataFormatError
from zoo.datasets.pipeline import ArrayDataset

PICKLE_SPLITS = {"train": "train", "validation": "valid", "test": "test"}
# Our input key <- MultiBench pickle key. Batches are dicts, so MultiBench's
# [vision, audio, text, label] order becomes these fixed keys.
MODALITY_KEYS = {"visual": "vision", "audio": "audio", "text": "text"}
DEFAULT_FILES = {
    "cmu_mosi": ("mosi_raw.pkl", "mosi_data.pkl"),
    "cmu_mosei": ("mosei_raw.pkl", "mosei_senti_data.pkl"),
    "ur_funny": ("humor.pkl",),
    "mustard": ("sarcasm.pkl",),
}
TASKS = ("classification", "regression")
_CACHE: dict[tuple[str, float], dict] = {}


def resolve_file(name: str, root: str) -> str:
    """``root`` itself when it is a file, else the first default pickle of ``name`` inside it."""
    if os.path.isfile(root):
        return root
    for filename in DEFAULT_FILES[name]:
        path = os.path.join(root, filename)
        if os.path.isfile(path):
            return path
    raise DataFormatError(
        os.path.join(root, DEFAULT_FILES[name][0]),
        f"pickle is missing (looked for {' or '.join(DEFAULT_FILES[name])}; "
        "or pass the .pkl file itself as root)",
    )


def _read(path: str) -> dict:
    key = (path, os.path.getmtime(path))
    if key not in _CACHE:  # one read serves the three splits
        _CACHE.clear()
        _CACHE[key] = read_pickle(path)
    return _CACHE[key]


def _split_arrays(path: str, data: object, split: str, problems: Problems):
    """Validates one split of the pickle; returns ({key: array}, labels, ids) or None."""
    if not isinstance(data, dict):
        problems(path, f"expected a dict with keys train/valid/test, got {type(data).__name__}")
        return None
    pickle_split = PICKLE_SPLITS[split]
    if pickle_split not in data:
        problems(path, f"split {pickle_split!r} is missing (keys: {sorted(map(str, data))})")
        return None
    part = data[pickle_split]
    missing = [k for k in (*MODALITY_KEYS.values(), "labels") if k not in part]
    if missing:
        problems(path, f"split {pickle_split!r} lacks keys {missing}")
        return None
    arrays = {}
    for ours, theirs in MODALITY_KEYS.items():
        array = np.asarray(part[theirs])
        if array.ndim != 3:
            problems(path, f"{pickle_split}/{theirs} has shape {array.shape}, expected (N, T, d)")
            return None
        if array.dtype.kind not in "iuf":
            problems(path, f"{pickle_split}/{theirs} has dtype {array.dtype}, expected numeric")
            return None
        arrays[ours] = array
    labels = np.asarray(part["labels"])
    lengths = {k: len(a) for k, a in arrays.items()} | {"labels": len(labels)}
    if len(set(lengths.values())) != 1:
        problems(path, f"{pickle_split} arrays differ in length: {lengths}")
        return None
    steps = {k: a.shape[1] for k, a in arrays.items()}
    if len(set(steps.values())) != 1:
        problems(path, f"{pickle_split} sequences differ in length: {steps}")
        return None
    if labels.size != len(labels) or labels.dtype.kind not in "iufb":
        problems(
            path,
            f"{pickle_split}/labels has shape {labels.shape} dtype {labels.dtype}, "
            "expected one number per example",
        )
        return None
    ids = np.asarray(part["id"]) if "id" in part else np.arange(len(labels))
    return arrays, labels.reshape(-1).astype(np.float32), ids


def _build(
    name: str,
    root: str,
    split: str,
    problems: Problems,
    task: str = "classification",
    align: bool = True,
    max_seq_len: int | None = 50,
    on_error: str = "raise",
    **batch_kwargs,
) -> ArrayDataset | None:
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}.")
    if max_seq_len is not None and (isinstance(max_seq_len, bool) or int(max_seq_len) < 1):
        raise ValueError(f"max_seq_len must be a positive integer or None, got {max_seq_len!r}.")
    path = resolve_file(name, root)
    result = _split_arrays(path, _read(path), split, problems)
    if result is None:
        return None
    arrays, scores, ids = result
    arrays = {k: a.astype(np.float32) for k, a in arrays.items()}
    arrays["audio"][np.isneginf(arrays["audio"])] = 0.0  # MultiBench: -inf audio -> 0
    keep = arrays["text"].reshape(len(scores), -1).sum(axis=1) != 0  # drop all-zero text rows
    arrays = {k: a[keep] for k, a in arrays.items()}
    scores, ids = scores[keep], ids[keep]
    if align:
        arrays = align_to_text(arrays, max_seq_len)
    elif max_seq_len is not None:
        arrays = {k: _fit_steps(a, int(max_seq_len)) for k, a in arrays.items()}
    if task == "classification":
        labels = (scores > 0).astype(np.int32)
        num_classes, class_names = 2, ["negative", "positive"]
    else:
        labels = scores
        if name in ("ur_funny", "mustard"):
            labels = np.where(scores < 1, -1.0, 1.0).astype(np.float32)
        num_classes, class_names = None, None
    dataset = ArrayDataset(
        arrays,
        labels,
        num_classes=num_classes,
        class_names=class_names,
        split=split,
        **batch_kwargs,
    )
    dataset.ids = ids
    dataset.dropped_empty_text = int((~keep).sum())
    return dataset


def align_to_text(arrays: dict[str, np.ndarray], max_seq_len: int | None) -> dict:
    """MultiBench's ``aligned=True`` with ``max_pad=True``: every example starts at its first
    time step with a non-zero text value (the left zero padding is removed), is cut to
    ``max_seq_len`` steps and zero-padded at the end (all modalities shifted alike)."""
    text = arrays["text"]
    count, steps = text.shape[:2]
    length = steps if max_seq_len is None else int(max_seq_len)
    starts = np.argmax(text.reshape(count, steps, -1).any(axis=2), axis=1)
    out = {k: np.zeros((count, length, a.shape[2]), np.float32) for k, a in arrays.items()}
    for i, start in enumerate(starts):
        kept = min(steps - start, length)
        for key, array in arrays.items():
            out[key][i, :kept] = array[i, start : start + kept]
    return out


def _fit_steps(array: np.ndarray, length: int) -> np.ndarray:
    """Cuts or end-pads the time axis (N, T, d) to ``length`` steps."""
    if array.shape[1] >= length:
        return array[:, :length]
    return np.pad(array, ((0, 0), (0, length - array.shape[1]), (0, 0)))


def make_loader(name: str, title: str):
    """Returns the ``load`` and ``check`` functions of one affect data set."""

    def load(root: str, split: str, **options) -> ArrayDataset:
        return _build(name, root, split, Problems(), **options)

    load.__doc__ = f"""{title}, MultiBench affect pickle (``datasets/affect/get_data.py``).

    ``root`` is the pickle itself or a folder holding {" or ".join(DEFAULT_FILES[name])}. The
    pickle is a dict ``{{"train"|"valid"|"test": {{"vision", "audio", "text", "labels", "id"}}}}``
    of (N, 50, d) arrays (d = 35/74/300 in MOSI/MOSEI ``*_raw.pkl``, 20/5/300 in
    ``mosi_data.pkl``, 371/81/300 in humor/sarcasm). Any d is accepted; the three sequence
    lengths must agree.

    Outputs "visual" (from ``vision``), "audio" and "text", each (``max_seq_len``, d) float32, as
    MultiBench's ``get_dataloader(max_pad=True)`` in its default ``aligned`` mode: -inf audio is
    set to 0, rows whose text sums to zero are dropped (count in ``dataset.dropped_empty_text``;
    ids in ``dataset.ids``), then every example starts at its first non-zero text step (the
    pickle's left padding removed) and is cut or zero-padded at the end to ``max_seq_len`` (50)
    steps. ``align=False`` keeps the pickle's time axis (cut/padded at the end to
    ``max_seq_len``; ``None`` keeps its length). Checked against MultiBench's ``Affectdataset``
    (``tests/test_conformance_loaders.py``). Splits: train, valid -> "validation", test.

    Labels: ``task="classification"`` (default) gives int32 score > 0 -> 1, else 0 (2 classes);
    ``task="regression"`` gives the float32 score (MOSI/MOSEI sentiment in [-3, 3]), or -1/+1
    (score < 1 -> -1) for UR-FUNNY and MUStARD, as MultiBench. The file is unpickled: only load
    files from a source you trust.
    """

    def check(root: str, report: CheckReport, deep: bool = True, **options) -> None:
        del deep
        problems = Problems(report)
        try:
            path = resolve_file(name, root)
            data = _read(path)
        except DataFormatError as error:
            report.add_error(error)
            return
        for split in PICKLE_SPLITS:
            result = _split_arrays(path, data, split, problems)
            if result is not None:
                arrays, labels, _ = result
                dims = ", ".join(f"{k} {a.shape[1:]}" for k, a in arrays.items())
                report.summary[split] = f"{len(labels)} examples; {dims}"

    return load, check
