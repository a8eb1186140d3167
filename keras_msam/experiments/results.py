"""What an experiment records: one row per run, the per-method summary with paired statistics,
and the atomic writers of the run directory's result files."""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import math
import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from keras_msam.experiments.stats import StatisticsError, paired_table


@dataclasses.dataclass
class RunResult:
    """Test metrics of one method and seed, with the epoch the validation split selected.

    ``train_accuracy`` is the selected weights' accuracy on the training split,
    ``generalisation_gap`` = train − test accuracy, ``sharpness`` the loss increase of the
    selected weights under a worst-case ρ-perturbation on (up to 512) training examples
    (`keras_msam.analysis.sharpness`). Runs written before these existed read back as NaN.
    """

    method: str
    seed: int
    accuracy: float
    modality_accuracy: dict[str, float]
    mean_shares: dict[str, float]
    ms_per_step: float
    best_epoch: int
    best_value: float
    epochs: int
    path: str = ""
    train_accuracy: float = math.nan
    generalisation_gap: float = math.nan
    sharpness: float = math.nan

    def row(self, select_metric: str) -> dict[str, Any]:
        """The flat `RUN_COLUMNS` row of results.csv."""
        row: dict[str, Any] = {"method": self.method, "seed": self.seed, "accuracy": self.accuracy}
        row.update({f"accuracy_{m}": v for m, v in self.modality_accuracy.items()})
        row.update({f"share_{m}": v for m, v in self.mean_shares.items()})
        row.update(
            {
                "ms_per_step": self.ms_per_step,
                "best_epoch": self.best_epoch,
                f"best_{select_metric}": self.best_value,
                "epochs": self.epochs,
                "train_accuracy": self.train_accuracy,
                "generalisation_gap": self.generalisation_gap,
                "sharpness": self.sharpness,
            }
        )
        return row


RUN_COLUMNS = (
    "method, seed, accuracy, accuracy_<modality>..., share_<modality>..., ms_per_step, "
    "best_epoch, best_<select_metric>, epochs, train_accuracy, generalisation_gap, sharpness"
)
SUMMARY_COLUMNS = (
    "method, runs, accuracy_mean, accuracy_std, accuracy_<modality>_mean, "
    "accuracy_<modality>_std, ..., share_<modality>_mean, ..., ms_per_step_mean, "
    "generalisation_gap_mean, sharpness_mean, best_<select_metric>_mean; and against the "
    "reference: reference, diff_mean, diff_ci_low, diff_ci_high, wins, ties, losses, p_value, "
    "p_holm, verdict"
)
PAIRED_FIELDS = (
    "diff_mean", "diff_ci_low", "diff_ci_high", "wins", "ties", "losses", "p_value", "p_holm",
    "verdict",
)  # fmt: skip


def summarise(
    runs: Sequence[RunResult], reference: str | None = None, select_metric: str = "val_accuracy"
) -> list[dict[str, Any]]:
    """One `SUMMARY_COLUMNS` row per method: mean and (population) std over its seeds, and,
    with a ``reference`` and at least 2 shared seeds, the paired comparison of the multimodal
    test accuracy with it (`keras_msam.experiments.stats`)."""
    rows = []
    for method in dict.fromkeys(r.method for r in runs):
        group = [r for r in runs if r.method == method]
        row: dict[str, Any] = {"method": method, "runs": len(group)}
        row["accuracy_mean"], row["accuracy_std"] = _mean_std([r.accuracy for r in group])
        for name in group[0].modality_accuracy:
            mean, std = _mean_std([r.modality_accuracy[name] for r in group])
            row[f"accuracy_{name}_mean"], row[f"accuracy_{name}_std"] = mean, std
        for name in group[0].mean_shares:
            row[f"share_{name}_mean"] = _mean_std([r.mean_shares[name] for r in group])[0]
        row["ms_per_step_mean"] = _mean_std([r.ms_per_step for r in group])[0]
        for key in ("generalisation_gap", "sharpness"):
            row[f"{key}_mean"] = _mean_std([getattr(r, key) for r in group])[0]
        row[f"best_{select_metric}_mean"] = _mean_std([r.best_value for r in group])[0]
        rows.append(row)
    if reference is not None:
        paired = paired_rows(runs, reference, select_metric, ("accuracy",), strict=False)
        by_method = {p["method"]: p for p in paired}
        for row in rows:
            if row["method"] in by_method:
                match = by_method[row["method"]]
                row["reference"] = reference
                row.update({key: match[key] for key in PAIRED_FIELDS})
    return rows


def paired_rows(
    runs: Sequence[RunResult],
    reference: str,
    select_metric: str = "val_accuracy",
    metrics: Sequence[str] | None = None,
    strict: bool = True,
) -> list[dict[str, Any]]:
    """Paired comparisons with ``reference`` for the multimodal and each unimodal accuracy
    (and the other ``metrics`` given). With ``strict=False`` a comparison that cannot be made
    yet (a reference or seed still missing in a run going on) gives no rows instead of raising."""
    if not runs:
        return []
    rows = [r.row(select_metric) for r in runs]
    if metrics is None:
        names = list(runs[0].modality_accuracy)
        metrics = ["accuracy", *(f"accuracy_{n}" for n in names), "generalisation_gap"]
    try:
        return paired_table(rows, reference, metrics)
    except StatisticsError:
        if strict:
            raise
        return []


def write_results(
    run_dir: str, config: Any, runs: Sequence[RunResult], final: bool = False
) -> list[dict[str, Any]]:
    """Writes results.csv/json (per run), summary.csv/json (per method) and, with a reference
    method, paired.csv/json (every method against it, per metric); returns the summary.

    ``final`` marks the last write: a paired comparison that cannot be made then raises."""
    reference = config.reference_method()
    rows = [r.row(config.select_metric) for r in runs]
    summary = summarise(runs, reference, config.select_metric)
    write_csv(os.path.join(run_dir, "results.csv"), rows)
    write_csv(os.path.join(run_dir, "summary.csv"), summary)
    paired: list[dict[str, Any]] = []
    seeds = len({r.seed for r in runs})
    if reference is not None and seeds >= 2:
        paired = paired_rows(runs, reference, config.select_metric, strict=final)
        write_csv(os.path.join(run_dir, "paired.csv"), paired)
        write_json(os.path.join(run_dir, "paired.json"), paired)
    write_json(
        os.path.join(run_dir, "results.json"),
        {"config": config.to_dict(), "runs": rows, "summary": summary, "paired": paired},
    )
    write_json(os.path.join(run_dir, "summary.json"), summary)
    return summary


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    array = np.asarray(values, dtype=float)
    return float(np.mean(array)), float(np.std(array))


def to_float(value: Any) -> float:
    """A log value (Python number, numpy or backend scalar) as a float."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return float(np.asarray(value))


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """Yields a temporary sibling of ``path`` (same extension, as Keras checks ``.weights.h5``
    and ``.keras``) to write; on success it is flushed to disk and renamed over ``path``, so a
    kill at any instant leaves the old complete file or the new one; on failure it is removed."""
    directory, name = os.path.split(path)
    temporary = os.path.join(directory, f".tmp-{os.getpid()}-{name}")
    try:
        yield temporary
        with open(temporary, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def write_json(path: str, value: Any) -> None:
    """Writes JSON atomically (`atomic_path`): never a half-written file."""
    with atomic_path(path) as temporary, open(temporary, "w") as handle:
        json.dump(value, handle, indent=2, default=to_float)


def write_csv(path: str, rows: Sequence[dict[str, Any]]) -> None:
    """Writes rows as CSV (columns: every key, first-seen order) atomically (`atomic_path`)."""
    columns = list(dict.fromkeys(k for row in rows for k in row))
    with atomic_path(path) as temporary, open(temporary, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
