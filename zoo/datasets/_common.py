"""Helpers the loaders share: problem collection and the generic deep check."""

from __future__ import annotations

import os
from collections.abc import Callable

from zoo.datasets.errors import CheckReport, DataFormatError
from zoo.datasets.pipeline import FileDataset, MultimodalDataset

# Options of `MultimodalDataset` that `zoo.datasets.load` passes to every loader.
BATCH_OPTION_NAMES = (
    "batch_size",
    "shuffle",
    "seed",
    "drop_remainder",
    "modalities",
    "workers",
    "use_multiprocessing",
)


class Problems:
    """Raises a `DataFormatError` on the first problem, or collects problems into a report."""

    def __init__(self, report: CheckReport | None = None):
        self.report = report

    def __call__(self, path: str | os.PathLike, message: str) -> None:
        if self.report is None:
            raise DataFormatError(path, message)
        self.report.add(path, message)

    def catch(self, error: DataFormatError) -> None:
        if self.report is None:
            raise error
        self.report.add_error(error)


def batch_options(options: dict) -> dict:
    """Splits the batching options (and ``on_error``) out of a loader's keyword arguments."""
    return {k: options.pop(k) for k in (*BATCH_OPTION_NAMES, "on_error") if k in options}


def check_splits(
    root: str,
    report: CheckReport,
    build: Callable[[str, str, Problems], MultimodalDataset | None],
    splits: tuple[str, ...] = ("train", "validation", "test"),
    deep: bool = True,
) -> None:
    """Builds each split collecting problems, then (``deep``) decodes every file of it."""
    problems = Problems(report)
    for split in splits:
        try:
            dataset = build(root, split, problems)
        except DataFormatError as error:
            report.add_error(error)
            continue
        if dataset is None:
            continue
        shapes = ", ".join(f"{m} {s}" for m, s in dataset.input_shapes.items())
        report.summary[split] = f"{dataset.num_examples} examples; {shapes}"
        if deep and isinstance(dataset, FileDataset):
            for index in range(dataset.num_examples):
                try:
                    dataset.read_example(index)
                except DataFormatError as error:
                    report.add_error(error)
